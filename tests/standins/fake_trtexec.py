"""STAND-IN for NVIDIA's trtexec (TensorRT cannot be installed on the machines these tests run on).

It behaves like trtexec at its interface, for the flags infbuild uses: prints the version banner, rejects
flags the emulated TensorRT version does not have (11.x removed --fp16/--bf16/--int8/--fp8/--best), checks
that --min/opt/maxShapes match the ONNX inputs, reads and writes the timing cache, writes the engine and the
JSON exports it is asked for. It builds nothing real. The tests write it out as an executable named
`trtexec` with the emulated version baked in (TRT_VERSION below is replaced).

Environment: FAKE_TRTEXEC_LOG (append one JSON line per run: argv, start, end), FAKE_TRTEXEC_FAIL (fail the
build like a parser error would), FAKE_TRTEXEC_SLEEP (seconds a build takes).
"""
import hashlib
import json
import os
import sys
import time

TRT_VERSION = "10.3.0"
COMMON = {
    "--onnx", "--saveEngine", "--loadEngine", "--timingCacheFile", "--minShapes", "--optShapes", "--maxShapes",
    "--shapes", "--separateProfileRun", "--profilingVerbosity", "--exportLayerInfo", "--exportProfile",
    "--exportTimes", "--exportOutput", "--builderOptimizationLevel", "--memPoolSize", "--hardwareCompatibilityLevel",
    "--versionCompatible", "--vc", "--sparsity", "--stronglyTyped", "--skipInference", "--noTF32", "--verbose",
    "--iterations", "--warmUp", "--duration", "--useCudaGraph", "--noDataTransfers", "--tempdir", "--help",
    "--device", "--avgTiming", "--maxAuxStreams", "--dumpLayerInfo", "--dumpProfile",
}
REMOVED_IN_11 = {"--fp16", "--bf16", "--int8", "--fp8", "--int4", "--best", "--calib", "--precisionConstraints"}


def version_code(version):
    major, minor, patch = (int(x) for x in version.split("."))
    return major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch


def fail(message):
    print(f"[E] {message}")
    print(f"&&&& FAILED TensorRT.trtexec [TensorRT v{version_code(TRT_VERSION)}] # trtexec {' '.join(sys.argv[1:])}")
    sys.exit(1)


def parse_shapes(spec):
    shapes = {}
    for item in spec.split(","):
        name, _, dims = item.rpartition(":")
        shapes[name] = [] if dims == "scalar" else [int(d) for d in dims.split("x")]
    return shapes


def check_shapes(onnx_path, flags):
    import onnx

    model = onnx.load(onnx_path, load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    specs = {k: parse_shapes(flags[k]) for k in ("--minShapes", "--optShapes", "--maxShapes") if k in flags}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
        for flag, shapes in specs.items():
            if value.name not in shapes:
                if None in dims:
                    fail(f"Dynamic dimensions required for input: {value.name}, but no shapes were provided. "
                         f"Automatically overriding shape to: ...")
                continue
            given = shapes[value.name]
            if len(given) != len(dims) or any(d is not None and d != g for d, g in zip(dims, given)):
                fail(f"{flag}: shape {given} does not match input {value.name} with dims {dims}")
    names = {v.name for v in model.graph.input}
    for flag, shapes in specs.items():
        for name in shapes:
            if name not in names:
                fail(f"{flag}: no input named {name} in the network")
    if len(specs) == 3:
        for name in specs["--minShapes"]:
            lo, opt, hi = (specs[f][name] for f in ("--minShapes", "--optShapes", "--maxShapes"))
            if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
                fail(f"min <= opt <= max violated for input {name}")


def main():
    started = time.time()
    code = version_code(TRT_VERSION)
    print(f"&&&& RUNNING TensorRT.trtexec [TensorRT v{code}] # trtexec {' '.join(sys.argv[1:])}")
    flags = {}
    for arg in sys.argv[1:]:
        name, _, value = arg.partition("=")
        known = COMMON | (set() if int(TRT_VERSION.split(".")[0]) >= 11 else REMOVED_IN_11)
        if name not in known:
            fail(f"Unknown option: {name}" if name not in REMOVED_IN_11 else
                 f"Unknown option: {name} (removed in TensorRT 11: networks are strongly typed)")
        flags[name] = value
    if "--help" in flags or not flags:
        print("=== Model Options ===\n  --onnx=<file>   ONNX model")
        return 0
    if "--stronglyTyped" in flags and int(TRT_VERSION.split(".")[0]) >= 11:
        print("[W] --stronglyTyped is deprecated and has no effect: all networks are strongly typed")
    onnx_path = flags.get("--onnx")
    if not onnx_path or not os.path.isfile(onnx_path):
        fail(f"Cannot open ONNX file {onnx_path}")
    check_shapes(onnx_path, flags)
    if os.environ.get("FAKE_TRTEXEC_FAIL"):
        print("[E] [TRT] ModelImporter.cpp:771: While parsing node number 3 [Conv -> \"conv\"]:")
        fail("Failed to parse onnx file")
    time.sleep(float(os.environ.get("FAKE_TRTEXEC_SLEEP", "0")))
    digest = hashlib.sha256(open(onnx_path, "rb").read()).hexdigest()
    cache = flags.get("--timingCacheFile")
    entries = 0
    if cache and os.path.isfile(cache):
        entries = json.loads(open(cache).read()).get("entries", 0)
        print(f"[I] Loaded {os.path.getsize(cache)} bytes of timing cache from {cache}")
    if cache:
        with open(cache, "w") as f:
            json.dump({"fake": "timing cache", "entries": entries + 1, "trt": TRT_VERSION}, f)
    print("[I] Engine built in 0.01 sec.")
    if "--saveEngine" in flags:
        with open(flags["--saveEngine"], "wb") as f:
            f.write(b"FAKE-TRT-ENGINE\n" + json.dumps({"trt": TRT_VERSION, "onnx": digest, "time": started}).encode())
        print(f"[I] Engine saved to {flags['--saveEngine']}")
    if "--skipInference" not in flags:
        if "--exportLayerInfo" in flags:
            json.dump({"Layers": [{"Name": "fake", "LayerType": "Fake"}], "Bindings": []},
                      open(flags["--exportLayerInfo"], "w"))
        if "--exportProfile" in flags:
            json.dump([{"count": 10}, {"name": "fake", "timeMs": 0.1, "averageMs": 0.01, "percentage": 100.0}],
                      open(flags["--exportProfile"], "w"))
        if "--exportTimes" in flags:
            json.dump([{"startEnqMs": 0.0, "endEnqMs": 0.01, "latencyMs": 0.02, "computeMs": 0.01}],
                      open(flags["--exportTimes"], "w"))
        print("[I] GPU Compute Time: min = 0.01 ms, mean = 0.01 ms, median = 0.01 ms")
    log = os.environ.get("FAKE_TRTEXEC_LOG")
    if log:
        with open(log, "a") as f:
            f.write(json.dumps({"argv": sys.argv[1:], "start": started, "end": time.time(), "trt": TRT_VERSION}) + "\n")
    print(f"&&&& PASSED TensorRT.trtexec [TensorRT v{code}] # trtexec {' '.join(sys.argv[1:])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The signature formats and key handling, in-process (fast): a stage signature binds the stage, recipe, target,
key and every file digest; keys are EC P-256 PEM files, optionally encrypted with a passphrase taken from the
environment; what cannot be used is one line naming the file."""
from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import make_keypair, model_signing_verify

from infbuild.artifacts import list_files
from infbuild.errors import ConfigError
from infbuild.signing import stage_signature
from infbuild.signing.dsse import BadSignature, KeyFileError, PublicKey, SigningKey
from infbuild.signing.trust import signer, trust
from infbuild.stamp import Stamp


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    f = tmp_path / "onnx"
    (f / "sub").mkdir(parents=True)
    (f / "model.onnx").write_bytes(b"graph")
    (f / "sub" / "model.onnx.data").write_bytes(b"weights" * 100)
    (f / "worker.log").write_text("log lines are not signed\n")
    return f


def signed(folder: Path, key: SigningKey) -> Stamp:
    stamp = Stamp("a" * 64, "onnx", "mlp", target="portable", files=list_files(folder), passed=None)
    stage_signature.write(folder, stage_signature.sign(key, stamp))
    return stamp


def test_a_signature_binds_stage_recipe_target_key_and_every_file(folder: Path, tmp_path: Path) -> None:
    pair = make_keypair(tmp_path, "ci")
    key, public = SigningKey.read(pair.private), PublicKey.read(pair.public)
    stamp = signed(folder, key)
    bundle = stage_signature.read(folder)
    trusted = {public.id: public}
    assert stage_signature.check(bundle, trusted, stamp).id == public.id
    cases = {
        "replayed": (replace(stamp, key="b" * 64), "signed for key 'aaaaaaaaaaaaaaaa', not 'bbbbbbbbbbbbbbbb'"),
        "relabelled": (replace(stamp, stage="aoti"), "signed for stage 'onnx', not 'aoti'"),
        "other target": (replace(stamp, target="cpu-x86_64-avx2"), "signed for target"),
        "other bytes": (replace(stamp, files={**stamp.files, "model.onnx": {"sha256": "0" * 64, "size": 5}}),
                        "model.onnx differs from the signed sha256"),
        "extra file": (replace(stamp, files={**stamp.files, "evil.so": {"sha256": "0" * 64, "size": 1}}),
                       "evil.so is not signed"),
        "verdict flipped": (replace(stamp, passed=True), "signed for passed"),
    }
    for other, message in cases.values():
        with pytest.raises(BadSignature, match=message.replace("(", r"\(").replace(")", r"\)")):
            stage_signature.check(bundle, trusted, other)
    with pytest.raises(BadSignature, match="which is not trusted"):
        stage_signature.check(bundle, {}, stamp)
    envelope = bundle["dsseEnvelope"]
    forged = {**bundle, "dsseEnvelope": {**envelope, "payload": envelope["payload"][:-8] + "AAAAAAA="}}
    with pytest.raises(BadSignature):
        stage_signature.check(forged, trusted, stamp)
    assert model_signing_verify(folder, pair.public).returncode == 0  # the independent verifier agrees


def test_signing_keys_from_settings_with_a_passphrase_from_the_environment(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    encrypted = tmp_path / "enc.pem"
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(tmp_path / "plain.pem")],
                   check=True)
    subprocess.run(["openssl", "pkcs8", "-topk8", "-in", str(tmp_path / "plain.pem"), "-out", str(encrypted),
                    "-passout", "pass:hunter2"], check=True)
    config = {"signing_key": "enc.pem", "signing_key_passphrase_env": "MY_KEY_PASS"}
    monkeypatch.delenv("INFBUILD_SIGNING_KEY", raising=False)
    monkeypatch.setenv("MY_KEY_PASS", "hunter2")
    key = signer(config, tmp_path)
    assert key is not None and key.source == str(encrypted)
    monkeypatch.setenv("MY_KEY_PASS", "wrong")
    with pytest.raises(ConfigError, match=r"enc\.pem: .*passphrase.*\(passphrase from \$MY_KEY_PASS\)"):
        signer(config, tmp_path)
    monkeypatch.delenv("MY_KEY_PASS")
    with pytest.raises(ConfigError, match="enc.pem"):
        signer(config, tmp_path)
    with pytest.raises(ConfigError, match="expected the name of an environment variable"):
        signer({"signing_key": "enc.pem", "signing_key_passphrase_env": "not a name"}, tmp_path)


def test_keys_that_cannot_be_used_are_one_line(tmp_path: Path) -> None:
    ed = tmp_path / "ed.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(ed)], check=True)
    with pytest.raises(KeyFileError, match="not an EC P-256 key"):
        SigningKey.read(ed)
    (tmp_path / "junk.pub").write_text("not a key")
    with pytest.raises(ConfigError, match="junk.pub: not a PEM public key"):
        trust(explicit=(tmp_path / "junk.pub",))
    with pytest.raises(ConfigError, match="missing.pub: cannot read the public key"):
        trust(explicit=(tmp_path / "missing.pub",))


def test_a_worker_cannot_leave_its_own_signature(folder: Path, tmp_path: Path) -> None:
    """A stage.sig a worker wrote into its staging folder is removed at commit: only the build's key signs."""
    from infbuild.artifacts import commit
    from infbuild.folder import Outputs

    attacker = SigningKey.read(make_keypair(tmp_path, "attacker").private)
    staging = tmp_path / ".onnx.staging"
    staging.mkdir()
    (staging / "model.onnx").write_bytes(b"graph")
    stage_signature.write(staging, stage_signature.sign(attacker, Stamp("a" * 64, "onnx", "mlp", target="portable",
                                                                         files=list_files(staging))))
    final = tmp_path / "final"
    commit(staging, final, Stamp("a" * 64, "onnx", "mlp", target="portable", files={}), Outputs(("model.onnx",)))
    assert not (final / "stage.sig").exists()


def test_several_trusted_keys_and_removing_one_revokes_what_it_signed(folder: Path, tmp_path: Path) -> None:
    old, new = make_keypair(tmp_path, "old"), make_keypair(tmp_path, "new")
    stamp = signed(folder, SigningKey.read(old.private))
    both = trust(explicit=(old.public, new.public))
    assert both.enforced and stage_signature.problem(folder, stamp, both.for_shared()) is None
    rotated = trust(explicit=(new.public,))
    why = stage_signature.problem(folder, stamp, rotated.for_shared())
    assert why is not None and "which is not trusted" in why
    signed(folder, SigningKey.read(new.private))  # infbuild sign --all with the new key
    assert stage_signature.problem(folder, stamp, rotated.for_shared()) is None

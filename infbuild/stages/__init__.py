"""Stage workers: each runs in its own subprocess (`python -m infbuild.stages REQUEST.json`), so torch,
compiler caches and crashes stay out of doit's process and `doit -n N` can run them side by side."""

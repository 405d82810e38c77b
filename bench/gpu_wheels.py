"""The wheels `bench/gpu.sh` installs on a GPU machine that cannot reach a package index: the
project's runtime dependencies, and theirs, that the machine's image lacks (Hydra, OmegaConf,
MLflow, Optuna, ...), at the versions installed here, built for the image's Python 3.12.

    make gpu-wheels                          # python bench/gpu_wheels.py --download .whl
    python bench/gpu_wheels.py               # list them (name==version); downloads nothing

`.whl/` is ignored by git; the device tool carries it (`carry: [".whl"]`, bench/README.md, GPU).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
PYTHON = "3.12"  # the GPU image's python3
# manylinux tags up to the image's glibc (2.39): pip matches each tag exactly.
PLATFORMS = ["manylinux1_x86_64", "manylinux2014_x86_64"] + [f"manylinux_2_{n}_x86_64" for n in range(17, 40)]
# Published as source only (pure Python): built into a wheel here.
SOURCE_ONLY = {"antlr4-python3-runtime"}
# What the GPU image already holds (the device tool's package list, read 2026-11-17): never carried.
IMAGE = set(
    """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs
    botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage
    cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn
    einops equinox etils execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec
    gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna imageio
    iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib
    kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml
    markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack
    multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda
    numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
    nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
    nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13
    nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum
    opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy
    portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
    pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
    pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich
    sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece
    sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy
    tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
    tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm
    transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop
    wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp""".split()
)


def missing() -> list[str]:
    """`name==version` of every runtime dependency (recursively) that the image lacks, as
    installed here; a dependency the image holds is not followed (the image brings its own)."""
    roots = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins: dict[str, str] = {}
    todo = [Requirement(r) for r in roots]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in pins or name in IMAGE or (req.marker and not req.marker.evaluate({"extra": ""})):
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"{name} is not installed here: run make install first") from None
        pins[name] = dist.version
        todo += [Requirement(r) for r in dist.requires or []]
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--download", type=Path, metavar="DIR", help="download the wheels into DIR (emptied first)"
    )
    args = parser.parse_args()
    pins = missing()
    if args.download is None:
        print("\n".join(pins))
        return
    args.download.mkdir(parents=True, exist_ok=True)
    for old in args.download.glob("*.whl"):  # one version of each: two would stop the install
        old.unlink()
    built = [p for p in pins if p.split("==")[0] in SOURCE_ONLY]
    platforms = [arg for tag in PLATFORMS for arg in ("--platform", tag)]
    pip = [sys.executable, "-m", "pip"]
    subprocess.run(
        [*pip, "download", "--quiet", "--no-deps", "--only-binary=:all:", "--python-version", PYTHON]
        + ["--implementation", "cp", *platforms, "-d", str(args.download)]
        + [p for p in pins if p not in built],
        check=True,
    )
    if built:
        subprocess.run([*pip, "wheel", "--quiet", "--no-deps", "-w", str(args.download), *built], check=True)
    wheels = sorted(args.download.glob("*.whl"))
    size = sum(w.stat().st_size for w in wheels) / 2**20
    print(f"{len(wheels)} wheels, {size:.1f} MB in {args.download} (the device tool carries 64 MiB a call)")


if __name__ == "__main__":
    main()

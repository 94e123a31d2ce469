"""Build steps beyond pyproject.toml: the gRPC stubs (grpcio-tools) and ``decoder._weighted_matching``
(C++ on PyMatching's sparse-blossom sources: the per-shot weighted matcher and the sliding-window loop)."""

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from pybind11.setup_helpers import Pybind11Extension
from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent
PROTO = ROOT / "proto" / "decoder.proto"
GENERATED = ROOT / "server" / "generated"

# The PyMatching release whose sparse-blossom sources the weighted matcher compiles in (its sdist,
# fetched once into build/): the matcher uses its internal C++ API, so the version is pinned here.
PYMATCHING_RELEASE = "2.4.0"
# its folders compiled in (under src/pymatching/): the matcher, and the driver that builds a matching graph
# from a DEM's error instructions (the window loop's graphs; rand: the driver's noise sampler, linked in)
PYMATCHING_DIRS = ["sparse_blossom/flooder", "sparse_blossom/flooder_matcher_interop", "sparse_blossom/matcher",
                   "sparse_blossom/search", "sparse_blossom/tracker", "sparse_blossom/driver", "rand"]
PYMATCHING_SKIPPED = (".test.cc", ".perf.cc", ".pybind.cc", "namespaced_main.cc")  # tests, benchmarks, bindings, CLI
# the few Stim declarations the driver reads, over a DEM flattened in Python (Stim itself is not compiled)
STIM_STAND_IN = "decoder/pymatching_stim"


def generate_stubs() -> None:
    from grpc_tools import protoc

    GENERATED.mkdir(exist_ok=True)
    (GENERATED / "__init__.py").write_text('"""Stubs generated from proto/decoder.proto by the build; do not edit."""\n')
    args = ["grpc_tools.protoc", f"-I{PROTO.parent}", f"--python_out={GENERATED}", f"--grpc_python_out={GENERATED}",
            str(PROTO)]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {PROTO}")
    # protoc writes `import decoder_pb2`; make it package-relative.
    grpc_module = GENERATED / "decoder_pb2_grpc.py"
    grpc_module.write_text(grpc_module.read_text().replace("import decoder_pb2 as", "from . import decoder_pb2 as"))


def pymatching_sources() -> Path:
    """``build/pymatching-<release>/src``: PyMatching's C++ sources from its sdist (downloaded by pip once)."""
    unpacked = Path("build") / f"pymatching-{PYMATCHING_RELEASE}"
    if not (unpacked / "src").is_dir():
        with tempfile.TemporaryDirectory() as download:
            command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", "pymatching",
                       f"pymatching=={PYMATCHING_RELEASE}", "-d", download]
            if subprocess.run(command).returncode != 0:
                raise RuntimeError(f"could not download the sources of pymatching=={PYMATCHING_RELEASE} "
                                   f"(`{' '.join(command[1:])}`); the weighted matcher is built from them")
            (archive,) = Path(download).glob("pymatching-*.tar.gz")
            with tarfile.open(archive) as sdist:
                sdist.extractall(unpacked.parent, filter="data")
    return unpacked / "src"


class BuildWithStubs(build_py):
    def run(self):
        generate_stubs()
        super().run()


class BuildWithPyMatching(build_ext):
    """Compiles the weighted matcher and the window loop together with PyMatching's sparse blossom, on every core."""

    def finalize_options(self):
        super().finalize_options()
        self.parallel = self.parallel or os.cpu_count()

    def run(self):
        sources = pymatching_sources()
        blossom = sorted(str(path) for folder in PYMATCHING_DIRS
                         for path in (sources / "pymatching" / folder).glob("*.cc")
                         if not path.name.endswith(PYMATCHING_SKIPPED))
        for extension in self.extensions:
            extension.sources += blossom
            extension.include_dirs += [str(sources), STIM_STAND_IN]
        super().run()


setup(cmdclass={"build_py": BuildWithStubs, "build_ext": BuildWithPyMatching},
      ext_modules=[Pybind11Extension("decoder._weighted_matching",
                                     ["decoder/weighted_matching.cc", "decoder/window_loop.cc"], cxx_std=20,
                                     extra_compile_args=["-O2"])])

"""Generates the gRPC stubs from proto/decoder.proto during the build (grpcio-tools)."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent
PROTO = ROOT / "proto" / "decoder.proto"
GENERATED = ROOT / "server" / "generated"


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


class BuildWithStubs(build_py):
    def run(self):
        generate_stubs()
        super().run()


setup(cmdclass={"build_py": BuildWithStubs})

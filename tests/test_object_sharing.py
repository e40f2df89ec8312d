"""scripts/object_sharing.py, which lets `make wheel CUDA=12` and the +cpu build link the CPU
objects make test compiled (docs/WHEELS.md), on a small ninja build made here: a donor folder
(temp-cu13) compiled with a CUDA include folder, then another flavour (temp-cu12, another CUDA
include folder) built through compile_sharing_objects. An object is taken only when it is up to
date, compiled by an equal command once the CUDA include folders are taken out, from no CUDA
header, and from no header one of this flavour's CUDA folders could shadow."""

import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("object_sharing",
                                              ROOT / "scripts" / "object_sharing.py")
sharing = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sharing)

pytestmark = pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler")


def _write_ninja(build_dir, sources, cuda_dir, src_dir, post="-O0"):
    """A build.ninja as torch's BuildExtension writes it (the variables and rule that
    object_sharing reads), and the object of each source."""
    build_dir.mkdir(parents=True, exist_ok=True)
    objects = [str(build_dir / (pathlib.Path(s).stem + ".o")) for s in sources]
    lines = ["ninja_required_version = 1.3", "cxx = c++",
             f"cflags = -fPIC -I{cuda_dir} -I{src_dir} -c", f"post_cflags = {post}", "",
             "rule compile", "  command = $cxx -MMD -MF $out.d $cflags -c $in -o $out $post_cflags",
             "  depfile = $out.d", "  deps = gcc", ""]
    lines += [f"build {o}: compile {os.path.abspath(s)}" for s, o in zip(sources, objects)]
    (build_dir / "build.ninja").write_text("\n".join(lines) + "\n")
    return objects


def _compiler(cuda_dir, src_dir, post="-O0"):
    """A stand-in for torch's ninja compile: writes build.ninja for these sources, runs ninja."""
    calls = []

    def compile(sources, output_dir, **kwargs):
        calls.append(list(sources))
        objects = _write_ninja(pathlib.Path(output_dir), sources, cuda_dir, src_dir, post)
        subprocess.run([sharing.ninja_exe(), "-C", output_dir], check=True,
                       capture_output=True)
        return objects
    return compile, calls


@pytest.fixture
def tree(tmp_path):
    if not os.path.exists(sharing.ninja_exe()):
        pytest.skip("ninja is not installed")
    src = tmp_path / "src"
    src.mkdir()
    (src / "plain.h").write_text("inline int plain() { return 1; }\n")
    (src / "probe.cpp").write_text("int probe() { return 0; }\n")
    (src / "cpu.cpp").write_text('#include "plain.h"\nint cpu() { return plain(); }\n')
    (src / "uses_cuda.cpp").write_text("#include <fake_cuda.h>\nint c() { return FAKE; }\n")
    for major in (12, 13):
        inc = tmp_path / f"cuda{major}" / "include"
        inc.mkdir(parents=True)
        (inc / "fake_cuda.h").write_text(f"#define FAKE {major}\n")
    sources = [str(src / n) for n in ("probe.cpp", "cpu.cpp", "uses_cuda.cpp")]
    # The donor: every source compiled, with CUDA 13's include folder.
    donor = tmp_path / "build" / "temp-cu13"
    compile13, _ = _compiler(tmp_path / "cuda13" / "include", src)
    compile13(sources, str(donor))
    (donor / sharing.OBJECTS_RECORD).write_text(
        json.dumps({"cuda_include_dirs": [str(tmp_path / "cuda13" / "include")]}))
    return tmp_path, src, sources


def _build_cu12(tmp_path, src, sources, post="-O0"):
    cuda12 = str(tmp_path / "cuda12" / "include")
    compile12, calls = _compiler(cuda12, src, post)
    logs = []
    objects = sharing.compile_sharing_objects(
        compile12, sources, str(tmp_path / "build" / "temp-cu12"),
        shareable={os.path.abspath(s) for s in sources[1:]}, probe=sources[0],
        cuda_dirs=[cuda12], log=logs.append)
    return objects, calls, "\n".join(logs)


def test_cpu_object_shared_and_cuda_object_compiled(tree):
    tmp_path, src, sources = tree
    objects, calls, log = _build_cu12(tmp_path, src, sources)
    donor = tmp_path / "build" / "temp-cu13"
    assert objects[1] == str(donor / "cpu.o"), log  # linked from the donor
    assert objects[2] == str(tmp_path / "build" / "temp-cu12" / "uses_cuda.o"), log
    assert "compiled from a CUDA header" in log, log
    assert calls == [[sources[0]], [sources[0], sources[2]]]  # the probe, then the rest
    record = json.loads((tmp_path / "build" / "temp-cu12" / sharing.OBJECTS_RECORD).read_text())
    assert record["reused"] == {sources[1]: str(donor / "cpu.o")}


def test_another_command_shares_nothing(tree):
    tmp_path, src, sources = tree
    objects, _, log = _build_cu12(tmp_path, src, sources, post="-O1")
    assert all("temp-cu12" in o for o in objects), log
    assert "another compile command" in log, log


def test_out_of_date_object_is_compiled(tree):
    tmp_path, src, sources = tree
    time.sleep(0.01)
    later = time.time() + 5
    os.utime(src / "plain.h", (later, later))  # edited since the donor compiled cpu.o
    objects, _, log = _build_cu12(tmp_path, src, sources)
    assert "temp-cu12" in objects[1] and "out of date there" in log, log


def test_header_a_cuda_folder_could_shadow_is_not_shared(tree):
    tmp_path, src, sources = tree
    (tmp_path / "cuda12" / "include" / "plain.h").write_text("inline int plain() { return 2; }\n")
    objects, _, log = _build_cu12(tmp_path, src, sources)
    assert "temp-cu12" in objects[1] and "could be shadowed" in log, log

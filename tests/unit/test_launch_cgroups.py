"""The cgroup pieces launch mode adds, on constructed cgroup trees (v2 is not mounted with
its memory controller on the reference host, so v2 is checked on files shaped like it)."""

from __future__ import annotations

from pathlib import Path

from capacity.measure.cgroup import OwnCgroup, read_cgroup_memory


def test_child_of_a_v2_cgroup_delegates_the_memory_controller_first(tmp_path: Path) -> None:
    run = tmp_path / "capplan-launch-1-2"
    run.mkdir()
    (run / "cgroup.subtree_control").write_text("")
    group = OwnCgroup(version=2, path=run, mount=tmp_path)
    child = group.child("instance-1")
    assert child.path == run / "instance-1" and child.path.is_dir()
    assert child.version == 2 and child.mount == tmp_path
    assert (run / "cgroup.subtree_control").read_text() == "+memory"


def test_child_of_a_v1_cgroup_is_a_plain_directory(tmp_path: Path) -> None:
    group = OwnCgroup(version=1, path=tmp_path, mount=tmp_path)
    child = group.child("instance-2")
    assert child.path.is_dir()
    assert not (tmp_path / "cgroup.subtree_control").exists()


def test_v1_sockets_and_kernel_memory_are_mapped(tmp_path: Path) -> None:
    (tmp_path / "memory.usage_in_bytes").write_text("104857600\n")
    (tmp_path / "memory.stat").write_text(
        "total_rss 83886080\ntotal_cache 8388608\ntotal_shmem 0\n"
        "hierarchical_memory_limit 9223372036854771712\n"
    )
    (tmp_path / "memory.kmem.usage_in_bytes").write_text("4194304\n")
    (tmp_path / "memory.kmem.tcp.usage_in_bytes").write_text("65536\n")
    memory = read_cgroup_memory(1, tmp_path)
    assert memory is not None
    assert memory.stat["anon"] == 83886080 and memory.stat["file"] == 8388608
    assert memory.stat["kernel"] == 4194304
    assert memory.stat["sock"] == 65536
    assert memory.limit_bytes is None

"""The image's lower dir is read as the node would resolve it, never through the host's tree."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from hpcgym.episode import Episode
from hpcgym.scenarios.checks import ImageFiles


def _fake_episode(lower: Path) -> SimpleNamespace:
    return SimpleNamespace(
        cluster=SimpleNamespace(
            config=SimpleNamespace(lowers={"compute": lower}), nodes={"n1": SimpleNamespace(role="compute")}
        )
    )


def test_an_absolute_symlink_in_the_image_resolves_inside_it_not_on_the_host(tmp_path):
    host = tmp_path / "host-secrets"
    host.mkdir()
    (host / "shadow").write_bytes(b"the host's own file\n")
    lower = tmp_path / "lower"
    (lower / "usr/lib64").mkdir(parents=True)
    (lower / "usr/lib64/libm.so.6").write_bytes(b"ELF")
    (lower / "lib64").symlink_to("usr/lib64")
    (lower / "etc").mkdir()
    (lower / "etc/alternatives").symlink_to(host)  # absolute: the host's dir on the host
    (lower / "etc/link").symlink_to("/usr/lib64/libm.so.6")
    episode = _fake_episode(lower)
    for read in (
        lambda path: Episode._read_image(episode, "n1", path),  # type: ignore[arg-type]
        lambda path: ImageFiles(episode).read("n1", path),  # type: ignore[arg-type]
    ):
        assert read("/etc/alternatives/shadow") is None
        assert read("/usr/lib64/libm.so.6") == b"ELF"
        assert read("/lib64/libm.so.6") == b"ELF"  # a relative link within the image still resolves
        assert read("/etc/link") is None  # a symlink itself is no file of the image


def test_an_image_file_past_the_read_cap_is_unreadable(tmp_path):
    lower = tmp_path / "lower"
    lower.mkdir()
    with open(lower / "big", "wb") as f:
        f.truncate(64 << 20)  # sparse: costs the test nothing
    episode = _fake_episode(lower)
    assert Episode._read_image(episode, "n1", "/big") is None  # type: ignore[arg-type]
    assert ImageFiles(episode).read("n1", "/big") is None  # type: ignore[arg-type]

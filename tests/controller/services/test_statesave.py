"""slurmctld saves its state in StateSaveLocation when it starts, keeping the previous save as NAME.old."""

from __future__ import annotations

from hpcgym.controller.services import slurm

from .conftest import LOGIN, SLURM_UID, Env, make_env

SAVE = "/var/spool/slurmctld"


def saved(env: Env, name: str) -> slurm.SavedState | None:
    return slurm.parse_state_file(env.access.read(LOGIN, f"{SAVE}/{name}"))


def test_every_state_file_is_saved_at_start_owned_by_slurm(env: Env) -> None:
    for name in slurm.STATE_FILES:
        state = saved(env, name)
        assert state is not None and state.generation == 1, name
        info = env.access.stat(LOGIN, f"{SAVE}/{name}")
        assert info is not None and (info.uid, info.perms) == (SLURM_UID, 0o600)
        assert env.access.read(LOGIN, f"{SAVE}/{name}.old") is None
    assert env.access.read(LOGIN, f"{SAVE}/clustername") == b"hpc\n"


def test_a_restart_saves_the_same_history_one_generation_on(env: Env) -> None:
    before = env.access.read(LOGIN, f"{SAVE}/job_state")
    env.tick(5)
    assert env.run(LOGIN, "systemctl", "restart", "slurmctld").exit_code == 0
    first, now = slurm.parse_state_file(before), saved(env, "job_state")
    assert first is not None and now is not None
    assert (now.lineage, now.generation) == (first.lineage, 2)
    assert env.access.read(LOGIN, f"{SAVE}/job_state.old") == before


def test_nothing_to_recover_starts_a_new_history(env: Env) -> None:
    first = saved(env, "node_state")
    for name in slurm.STATE_FILES:
        env.access.remove(LOGIN, f"{SAVE}/{name}")
    env.tick(5)
    env.run(LOGIN, "systemctl", "restart", "slurmctld")
    now = saved(env, "node_state")
    assert first is not None and now is not None
    assert now.generation == 1 and now.lineage != first.lineage


def test_a_lost_save_is_recovered_from_the_old_copy(env: Env) -> None:
    env.run(LOGIN, "systemctl", "restart", "slurmctld")
    old = saved(env, "part_state.old")
    env.access.remove(LOGIN, f"{SAVE}/part_state")
    env.run(LOGIN, "systemctl", "restart", "slurmctld")
    now = saved(env, "part_state")
    assert old is not None and now is not None
    assert (now.lineage, now.generation) == (old.lineage, old.generation + 1)


def test_a_torn_save_stops_slurmctld_until_it_is_put_right(env: Env) -> None:
    # slurmctld 22.05 will not start on a state file it cannot read, unless told to lose it (-i).
    env.run(LOGIN, "systemctl", "restart", "slurmctld")
    env.access.write(LOGIN, f"{SAVE}/part_state", b"garbage\n", uid=SLURM_UID, gid=SLURM_UID, mode=0o600)
    env.run(LOGIN, "systemctl", "restart", "slurmctld")
    assert env.run(LOGIN, "systemctl", "is-active", "slurmctld").stdout.strip() == "failed"
    log = env.run(LOGIN, "journalctl", "-u", "slurmctld", "--no-pager", "-n", "3").stdout
    assert "fatal: Can not recover partition state, data version incompatible, start with '-i'" in log
    old = env.access.read(LOGIN, f"{SAVE}/part_state.old")
    assert old is not None
    env.access.write(LOGIN, f"{SAVE}/part_state", old, uid=SLURM_UID, gid=SLURM_UID, mode=0o600)
    env.run(LOGIN, "systemctl", "start", "slurmctld")
    assert env.run(LOGIN, "systemctl", "is-active", "slurmctld").stdout.strip() == "active"


def test_saved_bytes_are_deterministic() -> None:
    one, two = make_env(), make_env()
    for name in slurm.STATE_FILES:
        path = f"{SAVE}/{name}"
        assert one.access.read(LOGIN, path) == two.access.read(LOGIN, path)


def test_a_state_file_that_does_not_parse_is_not_ours() -> None:
    for raw in (None, b"", b"garbage", f"{slurm.STATE_MAGIC} x\nLineage=\nGeneration=1\n".encode(),
                f"{slurm.STATE_MAGIC} x\nLineage=ab\nGeneration=\u00b2\n".encode()):  # fmt: skip
        assert slurm.parse_state_file(raw) is None

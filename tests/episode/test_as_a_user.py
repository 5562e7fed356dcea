"""A user's shell (`su - alice`) on a live episode: her tools are hers, the kernel says who calls.

The controller learns the caller from the control socket's peer credentials, never from the request,
so a user cannot pass for root by what she sends, and root's own tools stay root's.
"""

from __future__ import annotations


def test_alices_tools_act_as_alice_and_root_is_root_again_after_exit(episode):
    assert episode.step("su - alice").exit_code == 0
    submitted = episode.step("sbatch --wrap 'sleep 300'")
    assert submitted.output.startswith("Submitted batch job ")
    job = submitted.output.split()[-1]
    assert episode.step("squeue --me -h -o '%i %u'").output == f"{job} alice\n"
    refused = episode.step("scontrol update nodename=compute-01 state=drain reason=mine")
    assert (refused.output, refused.exit_code) == ("slurm_update error: Invalid user id\n", 1)
    assert "drain" not in episode.step("sinfo -h -n compute-01 -o %T").output
    # A user's own srun task runs as her on the node.
    assert episode.step("srun -w compute-02 id -un").output == "alice\n"
    episode.step("exit")
    assert episode.current_user == "root"
    assert episode.step(f"scancel {job}").exit_code == 0  # root may cancel anyone's job
    assert episode.step("scontrol update nodename=compute-01 state=drain reason=ops").exit_code == 0
    assert "drain" in episode.step("sinfo -h -n compute-01 -o %T").output


def test_a_forged_uid_in_the_request_changes_nothing(episode):
    # The stub's wire format has no uid; a request that adds one is still the caller's own.
    episode.step("su - bob")
    forged = (
        'python3 -c "import json,socket,struct; s=socket.socket(socket.AF_UNIX); '
        "s.connect('/run/hpcgym/control.sock'); "
        "m=json.dumps({'v':1,'argv':['scontrol','reconfigure'],'cwd':'/','uid':0}).encode(); "
        "s.sendall(struct.pack('>I',len(m))+m); print(s.recv(65536)[4:].decode())\""
    )
    assert "slurm_reconfigure error: Invalid user id" in episode.step(forged).output
    # Nor is sudo hers: Rocky's sudoers gives her no rule, and her password needs a terminal.
    refused = episode.step("sudo -u alice id")
    assert refused.exit_code == 1 and refused.output.endswith("sudo: a password is required\n")

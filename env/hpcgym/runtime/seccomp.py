"""A small seccomp filter for the sandboxes, written as classic BPF by hand (no libseccomp needed).

Capabilities already keep root in a node from mounting; this closes the one door left open: a new
user namespace, inside which a process would hold every capability again (bwrap's own
`--disable-userns` cannot be combined with the `--userns-block-fd` handshake hpcgym uses). It also
refuses the mount API, module loading, kexec, keyrings, bpf and swap outright, and every syscall
of a foreign ABI (x32, i386), so a number we did not list cannot slip through another table.
"""

from __future__ import annotations

import os
import platform
import struct

from hpcgym.errors import SandboxError

CLONE_NEWUSER = 0x10000000
RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000
EPERM = 1
ENOSYS = 38
X32_BIT = 0x40000000

LD_ABS_W = 0x20
JEQ_K = 0x15
JGE_K = 0x35
JSET_K = 0x45
RET_K = 0x06

# audit arch, clone, unshare, clone3, then syscalls refused outright.
_TABLES = {
    "x86_64": (
        0xC000003E,
        56,
        272,
        435,
        # mount umount2 pivot_root init/finit/delete_module kexec_load/file_load open_tree..fspick
        # mount_setattr setns bpf keyctl add_key request_key swapon swapoff
        (
            165,
            166,
            155,
            175,
            313,
            176,
            246,
            320,
            428,
            429,
            430,
            431,
            432,
            433,
            442,
            308,
            321,
            250,
            248,
            249,
            167,
            168,
        ),
    ),
    "aarch64": (
        0xC00000B7,
        220,
        97,
        435,
        (
            40,
            39,
            41,
            105,
            273,
            106,
            104,
            294,
            428,
            429,
            430,
            431,
            432,
            433,
            442,
            268,
            280,
            219,
            217,
            218,
            224,
            225,
        ),
    ),
}


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def seccomp_program(machine: str | None = None) -> bytes:
    """Return the filter as `struct sock_filter[]` bytes, ready for bwrap's `--seccomp FD`."""
    machine = machine or platform.machine()
    if machine not in _TABLES:
        raise SandboxError(f"no seccomp table for {machine}", hint="hpcgym supports x86_64 and aarch64 hosts")
    arch, clone, unshare, clone3, refused = _TABLES[machine]
    deny = _insn(RET_K, RET_ERRNO | EPERM)
    prog = [
        _insn(LD_ABS_W, 4),  # seccomp_data.arch
        _insn(JEQ_K, arch, 1, 0),
        deny,
        _insn(LD_ABS_W, 0),  # seccomp_data.nr
    ]
    if machine == "x86_64":
        prog += [_insn(JGE_K, X32_BIT, 0, 1), deny]
    for nr in (clone, unshare):
        # Low word of args[0] (the flags): refuse a new user namespace, allow everything else.
        prog += [_insn(JEQ_K, nr, 0, 4), _insn(LD_ABS_W, 16), _insn(JSET_K, CLONE_NEWUSER, 0, 1), deny]
        prog += [_insn(RET_K, RET_ALLOW)]
    # clone3 passes its flags in memory that BPF cannot read; ENOSYS makes libc fall back to clone.
    prog += [_insn(JEQ_K, clone3, 0, 1), _insn(RET_K, RET_ERRNO | ENOSYS)]
    for nr in refused:
        prog += [_insn(JEQ_K, nr, 0, 1), deny]
    prog.append(_insn(RET_K, RET_ALLOW))
    return b"".join(prog)


def seccomp_fd() -> int:
    """Return the read end of a pipe holding the filter (bwrap reads it to the end)."""
    data = seccomp_program()
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    return r

"""A small seccomp filter for the sandboxes, written as classic BPF by hand (no libseccomp needed).

Capabilities already keep root in a node from mounting; this closes the one door left open: a new
user namespace, inside which a process would hold every capability again (bwrap's own
`--disable-userns` cannot be combined with the `--userns-block-fd` handshake hpcgym uses). It also
refuses, whatever a node's capabilities, the kernel interfaces a node has no use for and that a
container runtime keeps from its containers: the mount API, module loading, kexec, keyrings, bpf,
swap, io_uring, userfaultfd, perf events, file-handle opens and the kernel log. Every syscall of a
foreign ABI (x32, i386, arm32) is refused too, so a number we did not list cannot slip through
another table.

Left allowed on purpose: ptrace and process_vm_readv/writev (a node debugging its own processes is
legitimate; the PID namespace hides everything else and the uid checks stand), name_to_handle_at
(it only names a file the caller can already see), and personality (its flags change only the
caller's own address space; the kernel clears the dangerous ones on a setuid exec).
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

# AUDIT_ARCH_* of the one ABI each host's sandboxes may use.
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}

# name: (x86_64 number, aarch64 number), from arch/x86/entry/syscalls/syscall_64.tbl and
# include/uapi/asm-generic/unistd.h (every syscall from 424 on has one number on both).
SYSCALLS = {
    "clone": (56, 220),
    "unshare": (272, 97),
    "clone3": (435, 435),
    "mount": (165, 40),
    "umount2": (166, 39),
    "pivot_root": (155, 41),
    "open_tree": (428, 428),
    "move_mount": (429, 429),
    "fsopen": (430, 430),
    "fsconfig": (431, 431),
    "fsmount": (432, 432),
    "fspick": (433, 433),
    "mount_setattr": (442, 442),
    "open_tree_attr": (467, 467),
    "setns": (308, 268),
    "init_module": (175, 105),
    "finit_module": (313, 273),
    "delete_module": (176, 106),
    "kexec_load": (246, 104),
    "kexec_file_load": (320, 294),
    "bpf": (321, 280),
    "keyctl": (250, 219),
    "add_key": (248, 217),
    "request_key": (249, 218),
    "swapon": (167, 224),
    "swapoff": (168, 225),
    "io_uring_setup": (425, 425),
    "io_uring_enter": (426, 426),
    "io_uring_register": (427, 427),
    "userfaultfd": (323, 282),
    "perf_event_open": (298, 241),
    "open_by_handle_at": (304, 265),
    "syslog": (103, 116),
}

# What each refused syscall answers. EPERM is what the kernel itself says to a caller without the
# capability or sysctl (and what Docker's default profile returns), so tools report "Operation not
# permitted" as they would in any container. ENOSYS says "this kernel has no such call", the answer
# on which callers fall back: libc retries clone3 as clone (BPF cannot read clone3's flags, which
# live in memory), and liburing, libuv and tokio go back to plain reads and writes without io_uring,
# an interface with a long record of kernel escapes that nothing in a node needs.
REFUSED = {
    **dict.fromkeys(
        (
            "mount",
            "umount2",
            "pivot_root",
            "open_tree",
            "move_mount",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "mount_setattr",
            "open_tree_attr",
            "setns",
            "init_module",
            "finit_module",
            "delete_module",
            "kexec_load",
            "kexec_file_load",
            "bpf",
            "keyctl",
            "add_key",
            "request_key",
            "swapon",
            "swapoff",
            # userfaultfd stalls kernel copies for as long as the caller likes (the classic way to
            # widen a race window); perf events expose kernel addresses and have had many bugs.
            "userfaultfd",
            "perf_event_open",
            # Opens any inode of a filesystem by handle, past every directory permission; the
            # kernel already wants CAP_DAC_READ_SEARCH (dropped), this holds even if that changes.
            "open_by_handle_at",
            # The host's kernel log (OOM reports, other processes' names and pids) is not a node's.
            "syslog",
        ),
        EPERM,
    ),
    **dict.fromkeys(("clone3", "io_uring_setup", "io_uring_enter", "io_uring_register"), ENOSYS),
}


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def seccomp_program(machine: str | None = None) -> bytes:
    """Return the filter as `struct sock_filter[]` bytes, ready for bwrap's `--seccomp FD`."""
    machine = machine or platform.machine()
    if machine not in AUDIT_ARCH:
        raise SandboxError(f"no seccomp table for {machine}", hint="hpcgym supports x86_64 and aarch64 hosts")
    column = 0 if machine == "x86_64" else 1
    deny = _insn(RET_K, RET_ERRNO | EPERM)
    prog = [
        _insn(LD_ABS_W, 4),  # seccomp_data.arch
        _insn(JEQ_K, AUDIT_ARCH[machine], 1, 0),
        deny,
        _insn(LD_ABS_W, 0),  # seccomp_data.nr
    ]
    if machine == "x86_64":
        prog += [_insn(JGE_K, X32_BIT, 0, 1), deny]
    for name in ("clone", "unshare"):
        # Low word of args[0] (the flags): refuse a new user namespace, allow everything else.
        nr = SYSCALLS[name][column]
        prog += [_insn(JEQ_K, nr, 0, 4), _insn(LD_ABS_W, 16), _insn(JSET_K, CLONE_NEWUSER, 0, 1), deny]
        prog += [_insn(RET_K, RET_ALLOW)]
    for name, errno in REFUSED.items():
        prog += [_insn(JEQ_K, SYSCALLS[name][column], 0, 1), _insn(RET_K, RET_ERRNO | errno)]
    prog.append(_insn(RET_K, RET_ALLOW))
    return b"".join(prog)


def seccomp_fd() -> int:
    """Return the read end of a pipe holding the filter (bwrap reads it to the end)."""
    data = seccomp_program()
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    return r

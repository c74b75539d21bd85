"""The seccomp filter every sandbox runs under: the system calls a function never needs and an
attacker reaches for first.

A sandboxed function has no capabilities, so most dangerous calls fail anyway; what remains open to
an unprivileged process is the kernel's attack surface: user namespaces (inside one a process holds
every capability again, and with them mount, netfilter and many a privilege escalation), keyrings,
eBPF, perf events, userfaultfd (the usual helper for racing the kernel), io_uring, and the new
mount API. These fail with EPERM; ``clone3``, whose flags sit in memory a filter cannot read,
fails with ENOSYS, after which the C library falls back to ``clone``, whose flags it can. A
system call of another ABI (32-bit, x32), whose numbers differ, fails with ENOSYS too.

``program`` is pure: the classic BPF bytes bubblewrap's ``--seccomp`` loads before the fork server
starts, so the fork server and every worker run under it, and no process in the sandbox can lift it.
"""

from __future__ import annotations

import errno
import platform
import struct

# Classic BPF opcodes (linux/filter.h) and seccomp's return values (linux/seccomp.h).
LD_ABS_W, JEQ, JSET, JGE, RET = 0x20, 0x15, 0x45, 0x35, 0x06
ALLOW = 0x7FFF0000
ERRNO = 0x00050000
NR_OFFSET, ARCH_OFFSET, ARG0_OFFSET = 0, 4, 16  # struct seccomp_data, little-endian
CLONE_NEWUSER = 0x10000000
X32_BIT = 0x40000000

# audit architecture, then the numbers of the calls refused outright, of clone and unshare (refused
# with CLONE_NEWUSER), and of clone3.
_X86_64 = (0xC000003E, {
    "keyctl": 250, "add_key": 248, "request_key": 249, "bpf": 321, "perf_event_open": 298,
    "userfaultfd": 323, "setns": 308, "mount": 165, "umount2": 166, "pivot_root": 155,
    "open_by_handle_at": 304, "kexec_load": 246, "init_module": 175, "finit_module": 313,
}, 56, 272, 435)
_AARCH64 = (0xC00000B7, {
    "keyctl": 219, "add_key": 217, "request_key": 218, "bpf": 280, "perf_event_open": 241,
    "userfaultfd": 282, "setns": 268, "mount": 40, "umount2": 39, "pivot_root": 41,
    "open_by_handle_at": 265, "kexec_load": 104, "init_module": 105, "finit_module": 273,
}, 220, 97, 435)
# Numbered alike on both (the generic table, Linux 5.1+).
COMMON = {"io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428,
          "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
          "mount_setattr": 442}
ARCHES = {"x86_64": _X86_64, "aarch64": _AARCH64}


def _op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k)


def program(machine: str | None = None) -> bytes | None:
    """The filter for ``machine`` (``platform.machine()``'s name), or None where none is known."""
    arch = ARCHES.get(machine or platform.machine())
    if arch is None:
        return None
    audit_arch, refused, clone, unshare, clone3 = arch
    eperm, enosys = _op(RET, ERRNO | errno.EPERM), _op(RET, ERRNO | errno.ENOSYS)
    # Each test of a call jumps over the return that follows it when the call does not match.
    ops = [_op(LD_ABS_W, ARCH_OFFSET), _op(JEQ, audit_arch, jt=1), enosys, _op(LD_ABS_W, NR_OFFSET)]
    if audit_arch == _X86_64[0]:
        ops += [_op(JGE, X32_BIT, jf=1), enosys]
    for number in sorted({*refused.values(), *COMMON.values()}):
        ops += [_op(JEQ, number, jf=1), eperm]
    ops += [_op(JEQ, clone3, jf=1), enosys]
    # clone and unshare: refused when their first argument asks for a user namespace.
    ops += [_op(JEQ, clone, jt=1), _op(JEQ, unshare, jf=3), _op(LD_ABS_W, ARG0_OFFSET),
            _op(JSET, CLONE_NEWUSER, jf=1), eperm, _op(RET, ALLOW)]
    return b"".join(ops)

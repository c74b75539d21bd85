"""The sandbox's seccomp filter: run by a small classic-BPF interpreter over a table of calls, and
loaded for real by bubblewrap."""

from __future__ import annotations

import errno
import os
import struct
import subprocess
import sys

import pytest

from workers.seccomp import ALLOW, ERRNO, program

X86_64, AARCH64, I386 = 0xC000003E, 0xC00000B7, 0x40000003


def run(filter_: bytes, arch: int, nr: int, arg0: int = 0) -> int:
    """What the kernel would return for one call (the subset of classic BPF the filter uses)."""
    data = struct.pack("<iIQ6Q", nr, arch, 0, arg0, 0, 0, 0, 0, 0)
    ops = [struct.unpack_from("<HBBI", filter_, i) for i in range(0, len(filter_), 8)]
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = ops[pc]
        pc += 1
        if code == 0x20:
            acc = struct.unpack_from("<I", data, k)[0]
        elif code == 0x06:
            return k
        else:
            taken = {0x15: acc == k, 0x35: acc >= k, 0x45: bool(acc & k)}[code]
            pc += jt if taken else jf


EPERM, ENOSYS = ERRNO | errno.EPERM, ERRNO | errno.ENOSYS


@pytest.mark.parametrize(("arch", "nr", "arg0", "expected"), [
    (X86_64, 0, 0, ALLOW),  # read
    (X86_64, 57, 0, ALLOW),  # fork
    (X86_64, 56, 0x01200011, ALLOW),  # clone as fork() makes it
    (X86_64, 56, 0x003D0F00, ALLOW),  # clone as pthread_create makes it
    (X86_64, 56, 0x10000000 | 17, EPERM),  # clone with CLONE_NEWUSER
    (X86_64, 272, 0x10000000, EPERM),  # unshare(CLONE_NEWUSER)
    (X86_64, 272, 0x00000400, ALLOW),  # unshare(CLONE_FILES)
    (X86_64, 435, 0, ENOSYS),  # clone3: the C library falls back to clone
    (X86_64, 250, 0, EPERM),  # keyctl
    (X86_64, 321, 0, EPERM),  # bpf
    (X86_64, 323, 0, EPERM),  # userfaultfd
    (X86_64, 425, 0, EPERM),  # io_uring_setup
    (X86_64, 308, 0, EPERM),  # setns
    (X86_64, 0x40000000 | 272, 0x10000000, ENOSYS),  # x32's unshare
    (I386, 310, 0x10000000, ENOSYS),  # a 32-bit call: other numbers
    (AARCH64, 97, 0x10000000, ENOSYS),  # aarch64's unshare is not x86_64's: another ABI here
])
def test_the_x86_64_filter(arch: int, nr: int, arg0: int, expected: int) -> None:
    assert run(program("x86_64"), arch, nr, arg0) == expected


@pytest.mark.parametrize(("nr", "arg0", "expected"), [
    (63, 0, ALLOW), (220, 0x01200011, ALLOW), (220, 0x10000000, EPERM), (97, 0x10000000, EPERM),
    (435, 0, ENOSYS), (280, 0, EPERM), (272, 0x10000000, ALLOW),  # 272 is not unshare there
])
def test_the_aarch64_filter(nr: int, arg0: int, expected: int) -> None:
    assert run(program("aarch64"), AARCH64, nr, arg0) == expected


def test_an_unknown_machine_has_no_filter() -> None:
    assert program("riscv64") is None


PROBE = """
import ctypes, errno, os, subprocess, threading
libc = ctypes.CDLL(None, use_errno=True)
def errno_of(rc):
    return 0 if rc == 0 else ctypes.get_errno()
t = threading.Thread(target=lambda: None); t.start(); t.join()
print(errno_of(libc.unshare(0x10000000)), errno_of(libc.syscall(321, 0, 0, 0)),
      subprocess.run(["true"]).returncode, flush=True)
"""


@pytest.mark.skipif(program() is None, reason="no filter for this machine")
def test_bubblewrap_loads_it_and_ordinary_programs_still_run() -> None:
    filter_ = program()
    assert filter_ is not None
    fd = os.memfd_create("seccomp")
    os.write(fd, filter_)
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        done = subprocess.run(
            ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-pid",
             "--seccomp", str(fd), sys.executable, "-c", PROBE],
            pass_fds=[fd], capture_output=True, text=True, timeout=30)
    finally:
        os.close(fd)
    assert done.returncode == 0, done.stderr
    # unshare(CLONE_NEWUSER) and bpf refused; a thread (clone3, then clone) and a child both run.
    assert done.stdout.split() == [str(errno.EPERM), str(errno.EPERM), "0"]

# Attack helper run *inside* the sandbox by the escape suite. Each subcommand tries one thing
# a compromised agent would try and prints ESCAPED if it worked, BLOCKED (with errno) if not.
import ctypes, errno, os, platform, socket, sys

if platform.machine() != "x86_64":
    print("SKIP: syscall numbers here are for x86_64")
    sys.exit(0)

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR = {
    "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "mount": 165,
    "umount2": 166, "pivot_root": 155, "chroot": 161, "unshare": 272, "setns": 308,
    "keyctl": 250, "add_key": 248, "request_key": 249, "bpf": 321, "perf_event_open": 298,
    "io_uring_setup": 425, "kexec_load": 246, "kexec_file_load": 320, "init_module": 175,
    "finit_module": 313, "delete_module": 176, "swapon": 167, "swapoff": 168, "reboot": 169,
    "acct": 163, "quotactl": 179, "userfaultfd": 323, "open_by_handle_at": 304,
    "fsopen": 430, "open_tree": 428, "move_mount": 429, "clone": 56, "clone3": 435,
}

def report(ok, what):
    e = ctypes.get_errno()
    print(("ESCAPED " if ok else "BLOCKED ") + what + ("" if ok else " errno=%s" % errno.errorcode.get(e, e)))
    return e

def sys_call(name, *args):
    r = libc.syscall(NR[name], *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
    return report(r >= 0, name)

cmd = sys.argv[1]
if cmd == "syscall":
    e = sys_call(sys.argv[2], *[int(a, 0) for a in sys.argv[3:]])
    if e != errno.EPERM and sys.argv[2] not in ("clone3",):
        print("NOT-SECCOMP errno=%s" % e)
elif cmd == "x32":
    # The same call by its x32 number (the x32 bit set); x32's own numbers (512 and up) by
    # number. Refused by the filter (EPERM) whether or not the kernel has x32 enabled.
    name = sys.argv[2]
    nr = (NR[name] if name in NR else int(name, 0)) | 0x40000000
    r = libc.syscall(nr, *[ctypes.c_long(int(a, 0)) for a in sys.argv[3:]])
    e = report(r >= 0, "x32 " + name)
    if e != errno.EPERM:
        print("NOT-SECCOMP errno=%s" % e)
elif cmd == "clone_ns":
    # clone(CLONE_NEWUSER | SIGCHLD): a child in a new user namespace.
    r = libc.syscall(NR["clone"], ctypes.c_long(0x10000000 | 17), None, None, None, None)
    if r == 0:
        os._exit(0)
    report(r > 0, "clone(CLONE_NEWUSER)")
elif cmd == "socket":
    fam = {"netlink": socket.AF_NETLINK, "packet": socket.AF_PACKET, "raw": socket.AF_INET}[sys.argv[2]]
    typ = socket.SOCK_RAW
    try:
        s = socket.socket(fam, typ, 1 if sys.argv[2] == "raw" else 0)
        print("ESCAPED socket " + sys.argv[2])
    except OSError as e:
        print("BLOCKED socket %s %s" % (sys.argv[2], e))
elif cmd == "udp":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.sendto(b"ESCAPED-UDP", ("127.0.0.1", int(sys.argv[2])))
        print("BLOCKED udp: sent, but only onto the sandbox's own loopback (the host checks)")
    except OSError as e:
        print("BLOCKED udp %s" % e)
elif cmd == "abstract":
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect("\0" + sys.argv[2])
        print("ESCAPED abstract socket")
    except OSError as e:
        print("BLOCKED abstract %s" % e)
elif cmd == "tiocsti":
    import fcntl, termios
    for fd in (0, 1, 2):
        try:
            fcntl.ioctl(fd, termios.TIOCSTI, b"x")
            print("ESCAPED tiocsti fd %d" % fd)
        except OSError as e:
            print("BLOCKED tiocsti fd %d %s" % (fd, e))
elif cmd == "balloon":
    chunks = []
    for _ in range(int(sys.argv[2])):
        chunks.append(bytearray(64 * 1024 * 1024))
    print("ESCAPED balloon")
elif cmd in ("forge", "signal_init", "idle_mem"):
    import signal, struct, time
    def argv_of(pid):
        try:
            return open("/proc/%d/cmdline" % pid, "rb").read().split(b"\0")
        except OSError:
            return []
    # This command's init: the nearest ancestor that is nanoclaw's init.
    init, pid = None, os.getppid()
    while pid > 0 and init is None:
        if argv_of(pid)[:1] == [b"/.nanoclaw/init"]:
            init = pid
        try:
            stat = open("/proc/%d/stat" % pid).read()
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    if init is None:
        print("HELPER-FAILED no init found among the ancestors")
        sys.exit(0)
    if cmd == "forge":
        # Write frames of our own into the init's report channel: output the host would show,
        # then a report saying all went well.
        report_json = b'{"outcome":{"exited":0},"limit":null,"file_reply":null,"error":null,"hardening":null,"dropped_stdout":0,"dropped_stderr":0}'
        frames = b"O" + struct.pack(">I", 24) + b"ESCAPED forged a frame\n\n"[:24] + b"R" + struct.pack(">I", len(report_json)) + report_json
        for path in ("/proc/%d/fd/1" % init, "/proc/%d/task/%d/fd/1" % (init, init)):
            try:
                fd = os.open(path, os.O_WRONLY)
                os.write(fd, frames)
                print("ESCAPED opened %s" % path)
            except OSError as e:
                print("BLOCKED open %s %s" % (path, errno.errorcode.get(e.errno, e.errno)))
        for what in ("mem", "environ"):
            try:
                os.close(os.open("/proc/%d/%s" % (init, what), os.O_RDONLY))
                print("ESCAPED read /proc/<init>/%s" % what)
            except OSError as e:
                print("BLOCKED /proc/<init>/%s %s" % (what, errno.errorcode.get(e.errno, e.errno)))
    elif cmd == "idle_mem":
        # The sandbox's main process (a container's idle init, or bwrap's init): write into its
        # memory and it would run our code outside every per-command wall.
        try:
            os.close(os.open("/proc/1/mem", os.O_RDWR))
            print("ESCAPED opened /proc/1/mem")
        except OSError as e:
            print("BLOCKED /proc/1/mem %s" % errno.errorcode.get(e.errno, e.errno))
    else:
        # Stop or kill the init: without it nobody kills what we leave behind.
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            try:
                os.kill(init, sig)
            except OSError as e:
                print("BLOCKED signal %d to the init %s" % (sig, errno.errorcode.get(e.errno, e.errno)))
                continue
            time.sleep(0.3)
            state = open("/proc/%d/stat" % init).read().rsplit(")", 1)[1].split()[0] if os.path.exists("/proc/%d" % init) else "gone"
            if state in ("T", "t", "gone", "Z"):
                print("ESCAPED signal %d: the init is %s" % (sig, state))
                os.kill(init, signal.SIGCONT)
            else:
                print("BLOCKED signal %d to the init: sent, but the kernel did not deliver it" % sig)
else:
    print("unknown attack " + cmd)
    sys.exit(2)

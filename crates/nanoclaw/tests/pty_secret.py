# Types a secret into `nanoclaw secret set` on a pseudo-terminal; fails if the value shows.
import os, pty, subprocess, sys, time, select
binary, home = sys.argv[1], sys.argv[2]
master, slave = pty.openpty()
p = subprocess.Popen([binary, "--home", home, "secret", "set", "PTYTEST", "--host", "example.com"],
                     stdin=slave, stdout=slave, stderr=slave, close_fds=True)
os.close(slave)
out = b""
def drain(t):
    global out
    end = time.time() + t
    while time.time() < end:
        r, _, _ = select.select([master], [], [], 0.1)
        if r:
            try:
                out += os.read(master, 4096)
            except OSError:
                return
drain(1.0)
os.write(master, b"s3cr3t-VALUE-typed\n")
drain(2.0)
p.wait(timeout=10)
drain(0.2)
sys.stdout.write(out.decode(errors="replace"))
sys.exit(0 if b"s3cr3t-VALUE-typed" not in out and p.returncode == 0 else 1)

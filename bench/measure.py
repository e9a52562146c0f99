"""Runs a command and reports its wall time and the peak RSS of its whole process tree.

    python bench/measure.py RESULT_FILE -- COMMAND [ARGS...]

Appends "wall_seconds peak_rss_kib" to RESULT_FILE and exits with the command's status. The
command runs in a session of its own; every 100 ms the RSS of all processes of that session is
summed (for PySpark that is the Python driver plus the JVM it starts, which /usr/bin/time would
not count: the JVM is not a child the Python process waits for). The peak reported is the larger
of that sampled sum and the kernel's exact peak of the command's own process (ru_maxrss), which
is what /usr/bin/time reports.
"""

import os
import subprocess
import sys
import time

PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def session_rss_kib(sid: int) -> int:
    total = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            # After the command name: state ppid pgrp session ...
            if int(fields[3]) != sid:
                continue
            with open(f"/proc/{name}/statm") as f:
                total += int(f.read().split()[1]) * PAGE_KIB
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
    return total


def main() -> None:
    result, sep, *command = sys.argv[1:]
    if sep != "--" or not command:
        raise SystemExit(__doc__)
    started = time.monotonic()
    child = subprocess.Popen(command, start_new_session=True)
    peak = 0
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid == child.pid:
            break
        peak = max(peak, session_rss_kib(child.pid))
        time.sleep(0.1)
    wall = time.monotonic() - started
    # The kernel's exact peak of the command's own process (and of the children it waited for)
    # catches a short peak between two samples.
    peak = max(peak, usage.ru_maxrss)
    with open(result, "a") as f:
        f.write(f"{wall:.2f} {peak}\n")
    sys.exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main()

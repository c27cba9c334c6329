"""Ctrl-C stops a serving CLI even when the signal lands on a thread other than the main one."""

import subprocess
import sys
import textwrap

# Linux hands a process-directed signal to any thread that does not block it; Ray's driver has many.
# pthread_kill makes that case certain: the signal's C handler runs on a helper thread, and nothing
# interrupts the main thread's sleep.
PROGRAM = textwrap.dedent("""
    import signal, threading, time
    from orchestrator.cli import sleep_until_interrupted

    helper = threading.Thread(target=time.sleep, args=(60,), daemon=True)
    helper.start()
    threading.Timer(0.3, signal.pthread_kill, (helper.ident, signal.SIGINT)).start()
    start = time.monotonic()
    try:
        sleep_until_interrupted()
    except KeyboardInterrupt:
        print(f"interrupted after {time.monotonic() - start:.2f} s")
""")


def test_ctrl_c_on_another_thread_ends_the_serving_sleep():
    done = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    seconds = float(done.stdout.split()[-2])
    assert 0.3 <= seconds < 2, done.stdout

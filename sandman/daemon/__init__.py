"""`sandman daemon`: the reconcile pass of `apply`, run again whenever something may have changed.

notify (sd_notify to systemd), journal (log lines journald keeps), watch (inotify, pidfds and
signals in one selector), restarts (backoff and counts), lastgood (the unit files of the last good
pass), schedule (what is due when) and loop (the main loop). Nothing here imports pydantic until
a pass runs: `status` reads the restart counts through restarts.py alone.
"""

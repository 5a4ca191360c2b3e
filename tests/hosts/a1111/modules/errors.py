"""Stand-in for modules/errors.py (v1.10.1): report() prints the message and traceback to stderr."""
import sys
import traceback

reported = []


def report(message, *, exc_info=False):
    reported.append(message)
    print("*** " + message, file=sys.stderr)
    if exc_info:
        traceback.print_exc()

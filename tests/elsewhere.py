"""`python -m tests.elsewhere --config FILE serve`: the gateway, as if it ran on another machine.

Its lease owner's machine differs from this one's, so the other processes here cannot see its pid and judge
it by its heartbeat alone, as processes on two hosts sharing one Redis do (tests/procs.py: `module=`).
"""

import sys

from sms_gateway import owners
from sms_gateway.cli import main

_here = owners.machine_id()
owners.machine_id = lambda: "another-host|" + _here

sys.exit(main())

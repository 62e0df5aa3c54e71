"""The SLA domain: policy, calendars, clocks, billing, escalation.

Pure functions of events, a policy and an instant: no I/O, no asyncio, no wall
clock. Live workers, rebuilds and auditors' replays all call this code.
"""

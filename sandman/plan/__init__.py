"""The planner: a pure function from (desired, actual) to the actions apply will take, with
every change, drift and step it will carry out shown. No I/O; of observe/ it reads only the
facts (data types).
"""

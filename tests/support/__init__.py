"""Helpers shared by the test suite; test modules import them from here, never from
another test module or a conftest.py (conftest files hold only fixtures, built from these).

``env``         ROOT, FIXTURES, the variables a test starts without, ``kache_log``
``waiting``     ``wait_for``: poll a condition with a hang guard
``entries``     store entries and event-log lines made by hand (``add_entry``, ``event``)
``archives``    remote archives made by hand (``make_archive``, ``good_members``)
``s3``          test credentials, a moto S3 server, a server that fails every request
``workspace``   the fixture workspace built through kache (``Workspace``, ``outcomes``)
``project``     small workspaces written from dicts, and their plain-cargo oracle
``daemon``      an in-process daemon, its fake remote, upload intents, a stand-in socket
``faults``      fault injection over real builds, and checks of a store after them
``remote_faults``  a fault proxy in front of moto, real daemon processes, bucket checks
``hostile``     ``tried``/``accepted``/``refused``: hostile inputs counted
``reliability`` the counts behind the reliability summary of a run
``launch``      the console script's code, a one-file library for rustc
``tui``         a store seeded at a frozen time, a headless pilot
``e2e``         which tests run cargo: the rule ``tests/conftest.py`` enforces
"""

"""The web console, `beatd web` (SPEC §9): server-rendered pages over `beatd.api.Beat`.

    app.py     the Flask app: pages and actions, each a call on Beat
    guard.py   who may ask (token, session cookie, loopback hosts), CSRF, security headers
    forms.py   the schedule form <-> Beat.add options, problems placed by field
    views.py   what pages show, computed: fire timelines with DST changes, the lag chart
    server.py  waitress, in the foreground or in a thread (tests, benchmarks)

Needs the `web` extra (Flask, which brings Jinja2, and waitress); nothing
else in beatd imports this package.
"""

"""The web console's shared pieces: page rendering, static files, sign-in, security headers.

Annotators and reviewers use tunewire without a terminal. Each view is a router of the
service that owns its data (the annotator view in label, the reviewer, history and overview
views in evaluate); what the views have in common lives here once: the Jinja2 environment
(autoescaping everything), the base template, the stylesheet and the script that signs a
person in, and the headers every page is sent with. Templates and scripts are package data.
"""

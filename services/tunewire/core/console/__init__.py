"""The web console's shell: page rendering, shared static files, sign-in, security headers.

Annotators and reviewers use tunewire without a terminal. Each view belongs to the service
that owns its data, which keeps the view's template and script as its own package data (the
annotator page in ``tunewire.label``, the review, history and overview pages in
``tunewire.evaluate``); what the views have in common lives here once: the Jinja2
environment (autoescaping everything), the base template, the stylesheet, the script that
signs a person in, and the headers every page is sent with.
"""

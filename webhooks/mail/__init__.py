"""Reading real-world mail: a plain package, free of Django.

``charsets`` turns declared (or undeclared) charsets into text, ``headers`` decodes header
values and addresses, ``html`` renders HTML bodies as text and ``mime`` walks the MIME tree.
Nothing here raises on malformed mail: every reader degrades to the best value it can find.
The decisions behind each reader are written down in docs/payload.md.
"""

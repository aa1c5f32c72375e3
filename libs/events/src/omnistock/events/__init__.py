"""omnistock's event catalogue and the plumbing every service shares.

Import from the modules: ``omnistock.events.catalogue`` (every event),
``.topics`` (the topic registry), ``.envelope`` / ``.codec`` (CloudEvents on
Kafka), ``.producer`` / ``.consumer`` (writing and reading), ``.fold`` /
``.replay`` (deterministic state), ``.positions`` (read-model positions),
``.http`` (problem details and health), ``.settings``.
"""

"""Running the stack: the apps strangler.yaml names, started in order.

- ``apps``        :class:`~strangler_proxy.stack.apps.AppSpec`: what a Python app
                  hands the toolkit (its aiohttp app, migrations, seeder, data plan)
- ``registry``    :func:`~strangler_proxy.stack.registry.load_stack`: the
                  ``stack:`` section resolved (``module:attribute`` or a command)
- ``runners``     an app, a command or a sync worker inside one event loop
- ``components``  what ``strangler up`` starts, and :func:`run_stack`
- ``traffic``     a plan's requests sent through the proxy on schedule (a steady rate)
- ``har``         a HAR recording read into a replay schedule (``strangler traffic --replay``)

The toolkit never imports a monolith or a service: they register here.
"""

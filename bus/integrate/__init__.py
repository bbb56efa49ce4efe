"""The integrator's tooling: ``bus plan`` / ``bus apply`` (the cluster and the registry
made to match the topology: topics, schema subjects, ACLs) and ``bus asyncapi`` (the
topology as an AsyncAPI 3.0 document).

- :mod:`bus.integrate.desired`: the state a topology implies;
- :mod:`bus.integrate.plan`: the actual state read and diffed into typed actions;
- :mod:`bus.integrate.apply`: the actions carried out, each with its outcome;
- :mod:`bus.integrate.acls`: ACL bindings and the broker's support for them;
- :mod:`bus.integrate.asyncapi`: the AsyncAPI document.

Nothing is imported here: ``bus.integrate.acl_probe`` runs in a child process and stays light.
"""

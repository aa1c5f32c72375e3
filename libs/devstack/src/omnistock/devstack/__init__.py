"""omnistock's embedded development stack and its pytest harness.

The submodules are imported on their own (``omnistock.devstack.broker``,
``.postgres``, ``.waiting``) so that loading one does not pull in the client
libraries of the others.
"""

"""Safe delivery: rollouts with automatic rollback, shadow traffic, ensembles and routers.

Pure decisions (``rollout.py``) apart from the stateful loops that apply them
(``controller.py``); everything invokes through the data plane. See docs/DELIVERY.md.
"""

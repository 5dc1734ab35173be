"""Which machine this is: the fingerprint and env_id (:mod:`.env`) and the GPUs' state (:mod:`.gpu`).
"""

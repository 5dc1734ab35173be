"""What a case measures, built and cached: the model zoo (:mod:`.zoo`), the compression recipes (:mod:`.compress`), the
fp32 reference outputs (:mod:`.reference`), training for fine-tunes and distillation (:mod:`.training`), and
parity and task accuracy against fp32 (:mod:`.accuracy`).
"""

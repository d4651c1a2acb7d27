"""The pykernels study: both write-ups' comparisons reproduced, honestly timed, with pykernels' rows beside them.

Run ``pykernels-study`` (or ``python -m pykernels.study``); ``--help`` lists the options. Sections:

- ``poly``: the polynomial write-up's fit (numpy, torch, torch autograd, GPU, torch.compile, JAX, pykernels);
- ``speed``: the first write-up's matmul/add timings, with synchronized GPU clocks;
- ``large``: the first write-up's 10^7-weight dot-product model, at its diverging lr and at a stable one.
"""

"""`acgan bench`: the suite and its table (suite.py), the model server's figures (serve.py), and the plain numpy/scipy
MS-SSIM the metric is measured and tested against (ms_ssim_reference.py)."""

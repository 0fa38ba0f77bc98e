-- REPA: one token-level source aligned at a shallow block with a constant
-- weight, on top of the plain SiT recipe (same model, data and schedule as
-- sit.lua).
--
-- Targets: the frozen teacher's 7×7 feature map (T = 49, D = 64; the
-- project's own CNN, assets/teacher.safetensors), resampled to the model's
-- token grid. To use your own targets instead (e.g. DINOv2 patch tokens),
-- set from = "file" and `file` to a .npy of shape (N, T, D) whose row i
-- belongs to example i of the dataset; relative paths resolve against the
-- directory of the config file that is loaded.
local steps = 600
return {
  name = "repa",
  model = { preset = "tiny", class_dropout = 0.1 },
  data = { dataset = "fashion-mnist", dir = "/usr/share/datasets/fashion-mnist" },
  train = {
    steps = steps, batch = 64, lr = 2e-4, betas = { 0.9, 0.999 },
    grad_clip = 1.0, ema_decay = 0.999, seed = 0,
    path = "linear", time_sampling = "uniform",
  },
  curriculum = { proj_coeff = 0.5, align_decay = "constant" },
  sample = { n = 16, steps = 50, sampler = "euler", cfg = 1.0, ema = true },
  sources = {
    { name = "enc", kind = "token", from = "teacher", depth = 2, coeff = 1.0,
      weighting = "constant", projector_dim = 256 },
  },
}

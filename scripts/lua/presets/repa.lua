-- REPA: one token-level source aligned at a shallow block with a constant
-- weight, on top of the plain SiT recipe (same model, data and schedule as
-- sit.lua).
--
-- Targets: `file` is a .npy of shape (N, T, D) whose row i belongs to example
-- i of the dataset (e.g. DINOv2 patch tokens of each image). The project's own
-- teacher encoder that will produce default targets does not exist yet, so
-- point `file` at your own targets. Relative paths resolve against the
-- directory of the config file that is loaded (the one you pass to `reed`).
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
    { name = "enc", kind = "token", file = "features/enc_tokens.npy", depth = 2, coeff = 1.0,
      weighting = "constant", projector_dim = 256 },
  },
}

-- Plain SiT: the denoising loss alone, no representation sources.
-- A baseline for repa.lua and reed.lua: same model, data and schedule.
-- Use it from your own config:  local c = preset "sit"; c.train.steps = 100; return c
return {
  name = "sit",
  model = { preset = "tiny", class_dropout = 0.1 },
  data = { dataset = "fashion-mnist", dir = "/usr/share/datasets/fashion-mnist" },
  train = {
    steps = 600, batch = 64, lr = 2e-4, betas = { 0.9, 0.999 }, eps = 1e-8,
    weight_decay = 0, grad_clip = 1.0, ema_decay = 0.999, seed = 0,
    path = "linear", time_sampling = "uniform",
    log_every = 10, sample_every = 200, ckpt_every = 200, keep_ckpts = 3,
  },
  sample = { n = 16, steps = 50, sampler = "euler", cfg = 1.0, ema = true },
  sources = {},
}

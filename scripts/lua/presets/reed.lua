-- REED: several representation sources at different depths plus a
-- curriculum. An image encoder's patch tokens are aligned early (block 2), a
-- second modality's global embedding deeper (block 3). Training starts with
-- alignment only (the `represent` phase, steps 0..99), ramps the denoising
-- loss in over 100 steps (`warmup`), then trains both (`joint`) while the
-- alignment weight decays to 0 along a cosine over the whole run.
--
-- Targets: the frozen teacher (assets/teacher.safetensors, the project's own
-- CNN trained on Fashion-MNIST labels): its 7×7 feature map as token-level
-- targets for block 2 (resampled to the model's grid), its pooled embedding
-- as a global target for block 3 — two levels of abstraction, as REED's
-- multi-latent view suggests. To use your own targets, set from = "file" and
-- `file` to a .npy whose row i belongs to example i of the dataset: (N, T, D)
-- for a token-level source, (N, D) for a global one.
--
-- When you change train.steps from your config, change
-- curriculum.align_steps with it, and keep diffusion_start + diffusion_warmup
-- well below the steps so that the model learns to denoise.
local steps = 600
return {
  name = "reed",
  model = { preset = "tiny", class_dropout = 0.1 },
  data = { dataset = "fashion-mnist", dir = "/usr/share/datasets/fashion-mnist" },
  train = {
    steps = steps, batch = 64, lr = 2e-4, betas = { 0.9, 0.999 },
    grad_clip = 1.0, ema_decay = 0.999, seed = 0,
    path = "linear", time_sampling = "uniform",
  },
  curriculum = {
    proj_coeff = 0.5,
    diffusion_start = 100,       -- s0: alignment only before this step
    diffusion_warmup = 100,      -- W: linear ramp of the denoising weight
    diffusion_decay = "constant",
    align_decay = "cosine",      -- lambda_align from 1 to 0 over align_steps
    align_steps = steps,
  },
  sample = { n = 16, steps = 50, sampler = "euler", cfg = 1.0, ema = true },
  sources = {
    { name = "enc", kind = "token", from = "teacher", depth = 2, coeff = 1.0,
      weighting = "constant", projector_dim = 256 },
    { name = "emb", kind = "global", from = "teacher", depth = 3, coeff = 1.0,
      weighting = "constant", projector_dim = 256 },
  },
}

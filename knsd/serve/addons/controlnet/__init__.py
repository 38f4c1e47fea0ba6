"""sd-webui-controlnet (v1.1.455) on diffusers: its modules as data (`modules`), the ones knsd runs
(`catalog`, `imageops`), units (`units`, `inputs`), fitted maps (`fit`, `thin`), models (`models`) and the
per-request session that hooks the pipelines (`build`, `plan`, `session`, `residuals`, `reference`,
`latents`, `postprocess`)."""

"""Backtests: `driver` runs bar files or a recorded log through the real engine on a
`stepper.StepDriver` loop; `sweep` runs a parameter grid; `report`, `periods`, `benchmark`
and `plots` turn the log into results; `outcome`, `progress` and `display` serve the command
line."""

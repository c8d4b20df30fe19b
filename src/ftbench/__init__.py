"""ftbench: a reproducible benchmark of QLoRA, GaLore and a staged QLoRA -> GaLore hybrid."""

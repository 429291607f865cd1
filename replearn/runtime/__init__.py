"""How a run uses the machine: threads per phase, torchrun's process group, seeding, log lines."""

"""The shapes world: paintbench's offline default world (pure, exact, CPU-fast).

Images of simple objects (six shape classes in GenEval's ten colours on a grey background) composed
from an 8×8 grid of tokens over a 61-entry codebook of 16-px patches, so masked-token policies can
generate them; an exact, weight-free detector that feeds GenEval's rules unchanged; a deterministic
GenEval-format prompt suite; and two reference generators (oracle and random).

Modules: `codebook` (vocabulary and patches), `render` (tokens → pixels), `detector` (pixels →
`Detection`s), `prompts` (the `shapes` suite), `layouts` (oracle and random token grids),
`generators` (`shapes-oracle`, `shapes-random`), `provider` (`shapes-geneval` metric).
Importing this package imports nothing heavy; import the submodules you need.
"""

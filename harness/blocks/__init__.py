"""The blocks world: a layout and its details, for testing Sketch-Then-Paint's premise.

In the shapes world one token is one whole object, so an image has no layout apart from its tokens and
no token is "detail". Here every object spans a 2×2 block of tokens on an 8×8 grid (4×4 object slots):
the block's top-left token is its *anchor* (layout: which class, and that there is an object in this
slot at all) and the other three are its *fills* (detail: the object's glyph painted in its colour,
which must agree with the anchor's class and be the prompt's colour, else the class's default). Rendering and detection are exact and weight-free, and GenEval's `judge`/`reward`
score the detections unchanged.

Two variants of the world differ only in how much freedom each role has, i.e. in which tokens a
masked-token policy can commit confidently first:

- `blocks` (layout first): anchors have one spelling, fills carry 4 equivalent spellings (variants),
  so after the warm start the anchors are the confident, early tokens and the fills follow them;
- `blocks-control` (details first): the anchors carry the 4 spellings and the fills one, so the
  fills are committed first and the anchors must then agree with them (dependency reversed).

Scoring ignores variants, so both variants have the same rewards. Modules: `codebook` (tokens,
patches, render), `layouts` (oracle token grids), `objects` (tokens → objects → detections, the layout
and detail terms, commit-order statistics), `provider` (`blocks-geneval`, `blocks-layout`,
`blocks-detail` metrics).
"""

"""Llama 3's compositional vision adapter on a frozen tiny Llama (arXiv:2407.21783, §7).

- :mod:`reasonlab.vision.data`: visual SkillMath (an operand shown as an image of handwritten
  digits from scikit-learn's ``load_digits``; same solutions and answer checking);
- :mod:`reasonlab.vision.encoder`: stage 1, a small ViT (``transformers`` ``MllamaVisionModel``)
  pre-trained here to read the rendered numbers;
- :mod:`reasonlab.vision.adapter`: stage 2, a ``MllamaForConditionalGeneration`` assembled from
  a frozen solver and the encoder, gated cross-attention layers trained, and :class:`VisualLM`;
- :mod:`reasonlab.vision.runner`: both stages as one resumable run (``reasonlab multimodal``).
"""

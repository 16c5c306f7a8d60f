"""Chat templates of the released repositories, as the project's test checkpoints carry them.

They render the prompts of shared/REFERENCE.md:
- ASR: the system turn (always present, holding the context), the user turn with one
  `<|audio_start|><|audio_pad|><|audio_end|>` per audio, assistant turns, and the generation
  prompt. A prefilled assistant message (`language English<asr_text>`) forces the language.
- Aligner: no chat markup; the audio, then each word followed by `<timestamp><timestamp>`.
"""

ASR = (
    "{%- set state = namespace(context='', audio='') -%}"
    "{%- for message in messages -%}"
    "{%- if message.content is string -%}"
    "{%- if message.role == 'system' -%}{%- set state.context = state.context + message.content -%}"
    "{%- endif -%}"
    "{%- else -%}{%- for part in message.content -%}"
    "{%- if message.role == 'system' and part.type == 'text' -%}"
    "{%- set state.context = state.context + part.text -%}"
    "{%- elif part.type == 'audio' or 'audio' in part or 'audio_url' in part -%}"
    "{%- set state.audio = state.audio + '<|audio_start|><|audio_pad|><|audio_end|>' -%}"
    "{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endfor -%}"
    "{{- '<|im_start|>system\\n' + state.context + '<|im_end|>\\n' -}}"
    "{{- '<|im_start|>user\\n' + state.audio + '<|im_end|>\\n' -}}"
    "{%- for message in messages if message.role == 'assistant' -%}"
    "{%- set reply = namespace(text='') -%}"
    "{%- if message.content is string -%}{%- set reply.text = message.content -%}"
    "{%- else -%}{%- for part in message.content if part.type == 'text' -%}"
    "{%- set reply.text = reply.text + part.text -%}{%- endfor -%}{%- endif -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{% generation %}{{- reply.text + '<|im_end|>\\n' -}}{% endgeneration %}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

ALIGNER = (
    "{%- set state = namespace(audio='', words=[]) -%}"
    "{%- for message in messages if message.content is not string -%}"
    "{%- for part in message.content -%}"
    "{%- if part.type == 'audio' or 'audio' in part or 'audio_url' in part -%}"
    "{%- set state.audio = state.audio + '<|audio_start|><|audio_pad|><|audio_end|>' -%}"
    "{%- elif part.type == 'text' -%}{%- set state.words = state.words + [part.text] -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endfor -%}"
    "{{- state.audio -}}"
    "{%- for word in state.words -%}{{- word + '<timestamp><timestamp>' -}}{%- endfor -%}"
)

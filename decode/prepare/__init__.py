"""What every backend does before it decodes: load the model and tokenizer (in the checkpoint's own
dtype), render and tokenize the prompts against the model's context, and check the files, settings
and chats first, so that a run fails in a second rather than after minutes of loading."""

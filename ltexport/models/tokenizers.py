"""A byte-level tokenizer for the tiny random models (vocab 256), with the few methods ltexport uses."""


class ByteTokenizer:
    bos_token_id = 1
    eos_token_id = 2
    pad_token_id = 0

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = list(text.encode("utf-8"))
        return ([self.bos_token_id] if add_special_tokens else []) + ids

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        special = {self.bos_token_id, self.eos_token_id, self.pad_token_id} if skip_special_tokens else set()
        return bytes(i for i in ids if i not in special and i < 256).decode("utf-8", errors="replace")

    def __call__(self, text: str, return_tensors=None):
        import torch

        ids = self.encode(text)
        return {"input_ids": torch.tensor([ids]) if return_tensors == "pt" else ids}

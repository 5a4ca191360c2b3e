"""Stand-in for modules/infotext_utils.py (v1.10.1): parse_generation_parameters (last line "k: v, ..."
with quoted values; "Size"-like "AxB" values split into -1/-2 keys) and the value handling of
connect_paste's paste_func, without gradio: for each (component, key) a callable's return or params[key];
None -> unchanged; else coerced with type(component.value) (bool: "False" -> False, int via float), a
failed coercion -> unchanged. Returns [(component, new value or UNCHANGED)]."""
import json
import re

re_param_code = r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)'
re_param = re.compile(re_param_code)
re_imagesize = re.compile(r"^(\d+)x(\d+)$")
UNCHANGED = object()


def unquote(text):
    if len(text) == 0 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except Exception:
        return text


def parse_generation_parameters(x: str):
    res = {}
    prompt = ""
    negative_prompt = ""
    done_with_prompt = False
    *lines, lastline = x.strip().split("\n")
    if len(re_param.findall(lastline)) < 3:
        lines.append(lastline)
        lastline = ''
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            done_with_prompt = True
            line = line[16:].strip()
        if done_with_prompt:
            negative_prompt += ("" if negative_prompt == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line
    for k, v in re_param.findall(lastline):
        try:
            if v[0] == '"' and v[-1] == '"':
                v = unquote(v)
            m = re_imagesize.match(v)
            if m is not None:
                res[f"{k}-1"] = m.group(1)
                res[f"{k}-2"] = m.group(2)
            else:
                res[k] = v
        except Exception:
            print(f"Error parsing \"{k}: {v}\"")
    res["Prompt"] = prompt
    res["Negative prompt"] = negative_prompt
    return res


def paste_values(paste_fields, params):
    out = []
    for output, key in paste_fields:
        if callable(key):
            try:
                v = key(params)
            except Exception:
                v = None
        else:
            v = params.get(key, None)
        if v is None:
            out.append((output, UNCHANGED))
            continue
        try:
            valtype = type(output.value)
            if valtype == bool and v == "False":
                val = False
            elif valtype == int:
                val = float(v)
            else:
                val = valtype(v)
            out.append((output, val))
        except Exception:
            out.append((output, UNCHANGED))
    return out

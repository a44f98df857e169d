"""A flat shields-style coverage badge drawn locally: no network call, no font file."""

from xml.sax.saxutils import escape

from testviper.config import BADGE_COLOURS

# Approximate Verdana 11 px advance widths; the badge only needs to look right.
NARROW = set("ijlI.,:;!|' ")
WIDE = set("mwMW%@")


def text_width(text: str) -> int:
    width = 0.0
    for ch in text:
        width += 3.5 if ch in NARROW else 10.0 if ch in WIDE else 7.0
    return round(width)


def colour_for(percent: float | None, bands: dict[str, float]) -> str:
    """The band whose lower bound is the highest one not above ``percent`` (grey: no data)."""
    if percent is None:
        return BADGE_COLOURS["grey"]
    chosen = None
    for colour, lowest in sorted(bands.items(), key=lambda item: item[1]):
        if percent >= lowest:
            chosen = colour
    if chosen is None:
        chosen = min(bands.items(), key=lambda item: item[1])[0]
    return BADGE_COLOURS.get(chosen, chosen)


def badge_svg(percent: float | None, bands: dict[str, float], label: str = "coverage") -> str:
    value = "no data" if percent is None else f"{percent:.1f}%"
    colour = colour_for(percent, bands)
    left, right = text_width(label) + 10, text_width(value) + 10
    total = left + right
    label_e, value_e = escape(label), escape(value)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="20" role="img" '
        f'aria-label="{label_e}: {value_e}">'
        f"<title>{label_e}: {value_e}</title>"
        '<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" '
        'stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient>'
        f'<clipPath id="r"><rect width="{total}" height="20" rx="3" fill="#fff"/></clipPath>'
        f'<g clip-path="url(#r)"><rect width="{left}" height="20" fill="#555"/>'
        f'<rect x="{left}" width="{right}" height="20" fill="{colour}"/>'
        f'<rect width="{total}" height="20" fill="url(#s)"/></g>'
        '<g fill="#fff" text-anchor="middle" '
        'font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="11">'
        f'<text x="{left / 2:.1f}" y="14">{label_e}</text>'
        f'<text x="{left + right / 2:.1f}" y="14">{value_e}</text></g></svg>\n'
    )

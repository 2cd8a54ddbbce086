"""Write the sample document pages in ``images/`` (pillow only, deterministic).

    uv run python scripts/make_sample_pages.py [OUT_DIR]

Six synthetic pages - a bar chart, a table, a text page, a pie chart, an invoice and a slide -
drawn with PIL's bundled default font, so the repository ships no third-party images. The
examples and the ingestion tests index them; each query in ``SAMPLE_QUERIES`` names one page.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "images"

PAGE = (850, 1100)  # US letter at 100 DPI
SLIDE = (1280, 720)
INK = (30, 30, 30)
GREY = (120, 120, 120)
LIGHT = (225, 228, 235)
PALETTE = [(52, 101, 164), (237, 125, 49), (112, 173, 71), (255, 192, 0), (165, 105, 189)]

# query -> the file it should find (used by the example and the tests' sanity checks)
SAMPLE_QUERIES = {
    "quarterly revenue bar chart": "bar_chart_revenue.png",
    "employee headcount table by department": "table_headcount.png",
    "history of the lighthouse keepers": "text_lighthouse.png",
    "energy mix pie chart": "pie_chart_energy.png",
    "invoice total amount due": "invoice_acme.png",
    "product roadmap slide": "slide_roadmap.png",
}


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def new_page(size: tuple[int, int] = PAGE) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("RGB", size, "white")
    return img, ImageDraw.Draw(img)


def title(draw: ImageDraw.ImageDraw, text: str, y: int = 60, size: int = 36) -> None:
    draw.text((70, y), text, fill=INK, font=font(size))


def footer(draw: ImageDraw.ImageDraw, text: str, size: tuple[int, int] = PAGE) -> None:
    draw.text((70, size[1] - 60), text, fill=GREY, font=font(14))


def bar_chart() -> Image.Image:
    img, d = new_page()
    title(d, "Quarterly Revenue 2024")
    d.text(
        (70, 110), "Northwind Traders, revenue by quarter (million USD)", fill=GREY, font=font(18)
    )
    values = [("Q1", 42.5), ("Q2", 55.1), ("Q3", 61.8), ("Q4", 73.4)]
    x0, y0, w, h = 130, 220, 620, 560
    d.line((x0, y0, x0, y0 + h), fill=INK, width=2)
    d.line((x0, y0 + h, x0 + w, y0 + h), fill=INK, width=2)
    top = 80.0
    for tick in range(0, 81, 20):
        y = y0 + h - h * tick / top
        d.line((x0 - 8, y, x0 + w, y), fill=LIGHT, width=1)
        d.text((x0 - 50, y - 10), str(tick), fill=GREY, font=font(16))
    bar_w = w // (2 * len(values))
    for i, (label, value) in enumerate(values):
        bx = x0 + bar_w // 2 + i * 2 * bar_w
        by = y0 + h - h * value / top
        d.rectangle((bx, by, bx + bar_w, y0 + h - 1), fill=PALETTE[0])
        d.text((bx + 10, by - 28), f"{value:.1f}", fill=INK, font=font(18))
        d.text((bx + bar_w // 2 - 12, y0 + h + 12), label, fill=INK, font=font(20))
    d.text(
        (70, 860),
        "Revenue grew in every quarter; Q4 was the strongest quarter",
        fill=INK,
        font=font(18),
    )
    d.text((70, 890), "on record, driven by the holiday season.", fill=INK, font=font(18))
    footer(d, "Figure 1 - Quarterly revenue, fiscal year 2024")
    return img


def table() -> Image.Image:
    img, d = new_page()
    title(d, "Employee Headcount by Department")
    d.text((70, 110), "Head office and regional branches, end of year", fill=GREY, font=font(18))
    header = ["Department", "2022", "2023", "2024", "Change"]
    rows = [
        ["Engineering", "118", "134", "152", "+13%"],
        ["Sales", "86", "91", "97", "+7%"],
        ["Marketing", "34", "38", "41", "+8%"],
        ["Finance", "22", "23", "25", "+9%"],
        ["Human Resources", "15", "16", "18", "+13%"],
        ["Customer Support", "57", "63", "60", "-5%"],
        ["Legal", "9", "10", "10", "0%"],
        ["Total", "341", "375", "403", "+7%"],
    ]
    cols = [70, 350, 470, 590, 710]
    y, row_h = 200, 56
    d.rectangle((60, y, 790, y + row_h), fill=PALETTE[0])
    for x, text in zip(cols, header, strict=True):
        d.text((x + 10, y + 16), text, fill="white", font=font(20))
    for r, row in enumerate(rows):
        y += row_h
        if r % 2:
            d.rectangle((60, y, 790, y + row_h), fill=LIGHT)
        for x, text in zip(cols, row, strict=True):
            d.text((x + 10, y + 16), text, fill=INK, font=font(20))
    d.rectangle((60, 200, 790, y + row_h), outline=INK, width=2)
    footer(d, "Table 3 - Full-time equivalents per department")
    return img


LIGHTHOUSE_TEXT = """\
For more than two centuries the lighthouse on Gull Point was
kept by a single family. The first keeper, appointed in 1791,
trimmed the wicks of whale-oil lamps every four hours through
the night and recorded each passing ship in a leather logbook.
His daughter took over the light in 1834 and kept it for
forty-one years, through storms that twice destroyed the
boathouse and once cracked the lantern glass.

The keepers' logbooks survive almost complete. They describe
fog signals, shipwrecks and rescues, the arrival of the
Fresnel lens in 1856, and the slow change from oil to
kerosene and finally to electric light in 1921.

When the light was automated in 1987 the last keeper handed
over the keys to the coast guard. The cottage is now a small
museum where visitors can read the logbooks and climb the
ninety-two steps to the lantern room."""


def text_page() -> Image.Image:
    img, d = new_page()
    title(d, "The Lighthouse Keepers of Gull Point")
    d.text((70, 110), "Chapter 2 - A family history", fill=GREY, font=font(20))
    y = 180
    for line in LIGHTHOUSE_TEXT.splitlines():
        d.text((70, y), line, fill=INK, font=font(21))
        y += 34
    footer(d, "Page 14")
    return img


def pie_chart() -> Image.Image:
    img, d = new_page()
    title(d, "Energy Mix 2024")
    d.text((70, 110), "Share of electricity generation by source", fill=GREY, font=font(18))
    parts = [
        ("Wind", 31.0),
        ("Solar", 18.0),
        ("Natural gas", 24.0),
        ("Hydro", 15.0),
        ("Nuclear", 12.0),
    ]
    box = (175, 200, 675, 700)
    cx, cy, r = 425, 450, 250
    start = -90.0
    for i, (_label, share) in enumerate(parts):
        end = start + 360.0 * share / 100.0
        d.pieslice(box, start, end, fill=PALETTE[i], outline="white", width=3)
        mid = math.radians((start + end) / 2)
        tx, ty = cx + 0.62 * r * math.cos(mid), cy + 0.62 * r * math.sin(mid)
        d.text((tx - 22, ty - 12), f"{share:.0f}%", fill="white", font=font(22))
        start = end
    y = 760
    for i, (label, share) in enumerate(parts):
        d.rectangle((180, y, 204, y + 24), fill=PALETTE[i])
        d.text((220, y), f"{label} - {share:.0f}%", fill=INK, font=font(20))
        y += 38
    footer(d, "Figure 2 - Renewables supplied 64% of electricity in 2024")
    return img


def invoice() -> Image.Image:
    img, d = new_page()
    d.text((70, 60), "ACME Tools Ltd.", fill=PALETTE[0], font=font(34))
    d.text((70, 105), "12 Foundry Lane, Springfield", fill=GREY, font=font(16))
    d.text((560, 60), "INVOICE", fill=INK, font=font(40))
    d.text((560, 115), "No. 2024-0173", fill=INK, font=font(18))
    d.text((560, 140), "Date: 14 March 2024", fill=INK, font=font(18))
    d.text((70, 190), "Bill to:", fill=GREY, font=font(18))
    d.text(
        (70, 215),
        "Riverside Workshop\n4 Mill Street\nShelbyville",
        fill=INK,
        font=font(18),
        spacing=6,
    )
    header = ["Item", "Qty", "Unit price", "Amount"]
    lines = [
        ["Cordless drill 18V", "2", "129.00", "258.00"],
        ["Drill bit set (42 pcs)", "3", "24.50", "73.50"],
        ["Safety goggles", "10", "6.90", "69.00"],
        ["Workbench, oak top", "1", "349.00", "349.00"],
        ["Delivery", "1", "25.00", "25.00"],
    ]
    cols = [70, 420, 520, 680]
    y = 340
    d.rectangle((60, y, 790, y + 44), fill=LIGHT)
    for x, text in zip(cols, header, strict=True):
        d.text((x + 8, y + 12), text, fill=INK, font=font(18))
    for row in lines:
        y += 44
        for x, text in zip(cols, row, strict=True):
            d.text((x + 8, y + 12), text, fill=INK, font=font(18))
        d.line((60, y + 44, 790, y + 44), fill=LIGHT, width=1)
    y += 70
    for label, amount in [("Subtotal", "774.50"), ("VAT 20%", "154.90")]:
        d.text((520, y), label, fill=INK, font=font(18))
        d.text((688, y), amount, fill=INK, font=font(18))
        y += 34
    d.rectangle((510, y, 790, y + 46), fill=PALETTE[0])
    d.text((520, y + 12), "Total due", fill="white", font=font(20))
    d.text((680, y + 12), "929.40", fill="white", font=font(20))
    d.text(
        (70, y + 110),
        "Payment due within 30 days. IBAN GB29 NWBK 6016 1331 9268 19",
        fill=GREY,
        font=font(16),
    )
    footer(d, "Thank you for your business.")
    return img


def slide() -> Image.Image:
    img, d = new_page(SLIDE)
    d.rectangle((0, 0, SLIDE[0], 120), fill=PALETTE[0])
    d.text((60, 34), "Product Roadmap 2025", fill="white", font=font(48))
    quarters = [
        ("Q1", ["Mobile app beta", "Single sign-on"]),
        ("Q2", ["Offline mode", "Public API v2"]),
        ("Q3", ["Team workspaces", "Audit log"]),
        ("Q4", ["AI assistant", "EU data region"]),
    ]
    x, w = 60, 275
    d.line((60, 230, 1220, 230), fill=GREY, width=4)
    for i, (q, items) in enumerate(quarters):
        left = x + i * (w + 20)
        d.ellipse((left + 20, 215, left + 50, 245), fill=PALETTE[i + 1])
        d.rectangle((left + 55, 212, left + 105, 250), fill="white")
        d.text((left + 60, 212), q, fill=INK, font=font(30))
        d.rounded_rectangle((left, 280, left + w, 560), radius=16, fill=LIGHT)
        y = 305
        for item in items:
            d.text((left + 20, y), "- " + item, fill=INK, font=font(24))
            y += 50
    d.text((60, 620), "Dates are targets and may change.", fill=GREY, font=font(20))
    d.text((1100, 670), "3 / 12", fill=GREY, font=font(18))
    return img


PAGES: dict[str, Callable[[], Image.Image]] = {
    "bar_chart_revenue.png": bar_chart,
    "table_headcount.png": table,
    "text_lighthouse.png": text_page,
    "pie_chart_energy.png": pie_chart,
    "invoice_acme.png": invoice,
    "slide_roadmap.png": slide,
}


def make_all(out: Path = DEFAULT_OUT) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in PAGES.items():
        path = out / name
        # A palette image keeps the files small; no dithering keeps them deterministic.
        image = draw().quantize(colors=64, dither=Image.Dither.NONE)
        image.save(path, format="PNG", optimize=True)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else DEFAULT_OUT
    for path in make_all(out):
        print(f"{path}  ({path.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

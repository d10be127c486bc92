"""Words the synthetic catalogs are made of: verticals, product types, attributes, brands.

Each product type carries a base price, synonyms (what buyers type instead of the catalog
word) and attribute words; titles are composed as "{brand} {attribute} {colour} {type}".
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProductType:
    name: str
    base_price: float
    synonyms: tuple[str, ...]
    attributes: tuple[str, ...]


@dataclass(frozen=True)
class Vertical:
    name: str
    types: tuple[ProductType, ...]
    brands: tuple[str, ...]
    colours: tuple[str, ...]
    blurb: str


_T = ProductType

VERTICALS: tuple[Vertical, ...] = (
    Vertical(
        "Footwear",
        (
            _T(
                "Running Shoes",
                95,
                ("sneakers", "trainers", "runners"),
                ("Trail", "Road", "Lightweight", "Cushioned", "Waterproof"),
            ),
            _T(
                "Hiking Boots",
                140,
                ("boots", "trekking boots"),
                ("Waterproof", "Leather", "Insulated", "Mid-Cut"),
            ),
            _T("Sandals", 45, ("slides", "flip flops"), ("Leather", "Sport", "Platform", "Cork")),
            _T("Loafers", 85, ("slip ons", "moccasins"), ("Suede", "Leather", "Penny", "Driving")),
            _T(
                "Ankle Boots",
                120,
                ("booties", "chelsea boots"),
                ("Suede", "Leather", "Heeled", "Lined"),
            ),
        ),
        (
            "Northwind",
            "Stridewell",
            "Cobalt Peak",
            "Fernhill",
            "Ashgrove",
            "Pace & Co",
            "Tundra Line",
            "Velo",
        ),
        ("Black", "White", "Navy", "Grey", "Tan", "Olive", "Red"),
        "Made for all-day comfort with a grippy outsole.",
    ),
    Vertical(
        "Apparel",
        (
            _T(
                "T-Shirt",
                25,
                ("tee", "shirt", "top"),
                ("Cotton", "Organic", "Oversized", "Slim-Fit", "Graphic"),
            ),
            _T(
                "Hoodie",
                55,
                ("sweatshirt", "pullover"),
                ("Fleece", "Zip-Up", "Oversized", "Cotton"),
            ),
            _T(
                "Jeans",
                70,
                ("denim", "pants"),
                ("Slim", "Straight", "High-Rise", "Relaxed", "Stretch"),
            ),
            _T("Midi Skirt", 48, ("skirt",), ("Pleated", "Linen", "Satin", "Wrap")),
            _T("Summer Dress", 65, ("dress", "sundress"), ("Floral", "Linen", "Wrap", "Maxi")),
            _T(
                "Rain Jacket",
                110,
                ("raincoat", "waterproof jacket", "shell"),
                ("Packable", "Hooded", "Lightweight", "Insulated"),
            ),
        ),
        (
            "Alder & Finch",
            "Loomhouse",
            "Marlow",
            "Everyday Co",
            "Kestrel",
            "Juniper Lane",
            "Threadline",
            "Saltmarsh",
        ),
        ("Black", "White", "Navy", "Heather Grey", "Sage", "Burgundy", "Cream", "Blue"),
        "Soft, breathable and easy to care for.",
    ),
    Vertical(
        "Home & Kitchen",
        (
            _T(
                "Coffee Maker",
                90,
                ("coffee machine", "drip brewer"),
                ("Programmable", "12-Cup", "Single-Serve", "Thermal"),
            ),
            _T(
                "Chef Knife",
                60,
                ("kitchen knife", "knife"),
                ("8-Inch", "Damascus", "Forged", "Japanese"),
            ),
            _T(
                "Frying Pan",
                45,
                ("skillet", "pan"),
                ("Non-Stick", "Cast Iron", "Stainless", "Ceramic"),
            ),
            _T(
                "Blender",
                80,
                ("smoothie maker", "mixer"),
                ("High-Speed", "Personal", "Glass-Jar", "Compact"),
            ),
            _T(
                "Bath Towel Set",
                40,
                ("towels", "bath towels"),
                ("Cotton", "Quick-Dry", "Plush", "Waffle"),
            ),
        ),
        (
            "Hearthstone",
            "Copperleaf",
            "Kitchen Atlas",
            "Brightware",
            "Oak & Ember",
            "Nordhaus",
            "Pantry Co",
        ),
        ("Black", "White", "Silver", "Copper", "Slate", "Sage"),
        "Built to last for everyday cooking and living.",
    ),
    Vertical(
        "Beauty",
        (
            _T(
                "Face Serum",
                35,
                ("serum", "vitamin c serum"),
                ("Vitamin C", "Hyaluronic", "Retinol", "Niacinamide"),
            ),
            _T("Moisturizer", 28, ("face cream", "lotion"), ("Daily", "Night", "Oil-Free", "Rich")),
            _T(
                "Shampoo",
                16,
                ("hair wash",),
                ("Sulfate-Free", "Volumizing", "Repair", "Clarifying"),
            ),
            _T(
                "Lipstick", 20, ("lip color", "lipstick"), ("Matte", "Satin", "Long-Wear", "Tinted")
            ),
            _T("Sunscreen", 22, ("spf", "sunblock"), ("SPF 50", "Mineral", "Sport", "Tinted")),
        ),
        ("Lumen Skin", "Petal & Pine", "Aurelia", "Clearwater", "Velvet Fox", "Dewdrop", "Mira"),
        ("Rose", "Nude", "Coral", "Clear", "Berry", "Peach"),
        "Dermatologist tested and cruelty free.",
    ),
    Vertical(
        "Electronics",
        (
            _T(
                "Wireless Earbuds",
                80,
                ("earphones", "headphones", "earbuds"),
                ("Noise-Cancelling", "Sport", "Compact", "Hi-Fi"),
            ),
            _T(
                "Bluetooth Speaker",
                60,
                ("speaker", "portable speaker"),
                ("Waterproof", "Mini", "Party", "Rugged"),
            ),
            _T("Phone Case", 20, ("case", "phone cover"), ("Slim", "Rugged", "Clear", "Leather")),
            _T(
                "Smartwatch",
                180,
                ("watch", "fitness tracker"),
                ("GPS", "Fitness", "AMOLED", "Solar"),
            ),
            _T(
                "USB-C Charger",
                30,
                ("charger", "power adapter"),
                ("65W", "Fast", "Dual-Port", "Travel"),
            ),
        ),
        ("Voltix", "Sonara", "Pixelcraft", "Auralink", "Gridpoint", "Nimbus", "Quanta"),
        ("Black", "White", "Graphite", "Blue", "Silver", "Midnight"),
        "Backed by a two-year warranty.",
    ),
    Vertical(
        "Outdoor",
        (
            _T(
                "Camping Tent",
                160,
                ("tent", "shelter"),
                ("2-Person", "4-Person", "Ultralight", "Backpacking"),
            ),
            _T(
                "Sleeping Bag",
                90,
                ("sleeping bag", "bag"),
                ("Down", "3-Season", "Mummy", "Compact"),
            ),
            _T(
                "Hiking Backpack",
                110,
                ("backpack", "daypack", "rucksack"),
                ("35L", "20L", "Waterproof", "Ventilated"),
            ),
            _T(
                "Water Bottle",
                25,
                ("bottle", "flask"),
                ("Insulated", "1L", "Filter", "Collapsible"),
            ),
            _T(
                "Headlamp",
                35,
                ("head torch", "flashlight"),
                ("Rechargeable", "400-Lumen", "Red-Light", "Compact"),
            ),
        ),
        ("Ridgeback", "Summit Forge", "Trailcraft", "Wildpine", "Basecamp", "Northstar"),
        ("Green", "Orange", "Black", "Blue", "Grey", "Sand"),
        "Field tested in all four seasons.",
    ),
    Vertical(
        "Pet Supplies",
        (
            _T(
                "Dog Food",
                45,
                ("kibble", "dog kibble"),
                ("Grain-Free", "Puppy", "Senior", "Salmon"),
            ),
            _T(
                "Cat Litter",
                20,
                ("litter", "kitty litter"),
                ("Clumping", "Unscented", "Natural", "Low-Dust"),
            ),
            _T(
                "Dog Leash",
                22,
                ("leash", "lead"),
                ("Reflective", "Retractable", "Leather", "Hands-Free"),
            ),
            _T(
                "Pet Bed",
                55,
                ("dog bed", "cat bed"),
                ("Orthopedic", "Calming", "Washable", "Donut"),
            ),
            _T("Cat Toy", 12, ("toy", "teaser"), ("Feather", "Catnip", "Interactive", "Laser")),
        ),
        ("Pawsome", "Barkley", "Whisker & Co", "Tailwind", "Good Boy", "Purrfect"),
        ("Brown", "Grey", "Blue", "Pink", "Green", "Black"),
        "Vet approved for happy pets.",
    ),
    Vertical(
        "Toys & Games",
        (
            _T("Jigsaw Puzzle", 22, ("puzzle",), ("1000-Piece", "500-Piece", "Landscape", "Kids")),
            _T(
                "Board Game",
                38,
                ("game", "family game"),
                ("Strategy", "Party", "Cooperative", "Classic"),
            ),
            _T(
                "Building Blocks",
                45,
                ("blocks", "construction set"),
                ("Starter", "Deluxe", "Magnetic", "Wooden"),
            ),
            _T("Plush Toy", 18, ("stuffed animal", "teddy"), ("Bear", "Bunny", "Dino", "Giant")),
        ),
        ("Playwright", "Tinker Bay", "Merrywood", "Brickhaven", "Puzzler", "Gamesmith"),
        ("Multicolour", "Blue", "Red", "Yellow", "Green"),
        "Hours of fun for the whole family.",
    ),
    Vertical(
        "Sports & Fitness",
        (
            _T("Yoga Mat", 35, ("mat", "exercise mat"), ("Non-Slip", "Thick", "Travel", "Cork")),
            _T(
                "Dumbbell Set",
                75,
                ("dumbbells", "weights"),
                ("Adjustable", "Hex", "Neoprene", "Pair"),
            ),
            _T(
                "Tennis Racket",
                95,
                ("racket", "racquet"),
                ("Graphite", "Junior", "Power", "Control"),
            ),
            _T(
                "Cycling Helmet",
                70,
                ("helmet", "bike helmet"),
                ("MIPS", "Aero", "Commuter", "Lightweight"),
            ),
        ),
        ("Ironside", "Flexa", "Aceline", "Velodyne", "Corepath", "Zenfit"),
        ("Black", "Purple", "Teal", "Red", "White", "Grey"),
        "Designed with athletes, for athletes.",
    ),
    Vertical(
        "Jewelry",
        (
            _T(
                "Pendant Necklace",
                60,
                ("necklace", "chain"),
                ("Gold-Plated", "Sterling", "Minimalist", "Pearl"),
            ),
            _T(
                "Stud Earrings",
                40,
                ("earrings", "studs"),
                ("Sterling", "Gold-Plated", "Hoop", "Crystal"),
            ),
            _T(
                "Stacking Ring",
                35,
                ("ring", "band"),
                ("Sterling", "Gold-Plated", "Signet", "Birthstone"),
            ),
            _T(
                "Charm Bracelet", 50, ("bracelet", "bangle"), ("Beaded", "Chain", "Leather", "Cuff")
            ),
        ),
        ("Aurum & Ash", "Lark", "Opaline", "Sable Row", "Gilded Fern", "Maison Ivy"),
        ("Gold", "Silver", "Rose Gold", "Pearl", "Black"),
        "Hypoallergenic and gift boxed.",
    ),
)

# Words some buyers add to a query (deal seekers, gift buyers, quality seekers).
QUERY_MODIFIERS: dict[str, tuple[str, ...]] = {
    "deal": ("cheap", "sale", "discount", "budget", "affordable"),
    "gift": ("gift", "present", "for him", "for her"),
    "quality": ("best", "premium", "top rated", "durable"),
}

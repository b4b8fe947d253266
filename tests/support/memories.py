"""The agent memories every memory test stores, and paraphrased queries that only vectors can answer."""

MEMORIES = {
    "car": "I left the car on level 3 of the airport parking garage.",
    "tea": "Alice prefers green tea without sugar.",
    "meeting": "The quarterly budget review was moved to Thursday morning.",
    "wifi": "The guest wifi password is sunflower42.",
    "dentist": "Bob has a dentist appointment next Tuesday.",
    "keys": "The spare house keys are in the blue kitchen drawer.",
    "flight": "My flight to Lisbon departs at 7:40 from gate B12.",
    "plant": "Water the fern on the balcony every three days.",
    "birthday": "Mum's birthday is on the 14th of June; she likes orchids.",
    "server": "The staging server runs Ubuntu 24.04 with 64 GB of RAM.",
}
# paraphrases with little word overlap: vector search must carry them
SEMANTIC = {
    "where did I park the vehicle?": "car",
    "what drink does Alice like?": "tea",
    "when is the finance meeting?": "meeting",
    "which gift flowers for my mother?": "birthday",
}

"""Agent memory, framework-free: the memory index (keyword search), rank fusion, keeping the vector
store in step, and the router both adapters' retrievers delegate to."""
